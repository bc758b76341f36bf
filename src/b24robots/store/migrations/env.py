"""Alembic environment: batch mode (SQLite ALTERs) and named constraints from the models."""

from __future__ import annotations

from alembic import context

from b24robots.store.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    from b24robots.config import load_settings
    from b24robots.store.db import Database

    engine = Database(load_settings().effective_database_url).engine

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
