"""A throw-away PostgreSQL server for benchmarks: tests/pgserver.py, but with durable commits.

The test suite's server runs with fsync and synchronous_commit off (fast, not durable); intake is
measured "with durable commit", so here both are on, as in production.
"""

from __future__ import annotations

import psycopg
from tests.pgserver import PostgresServer


class DurablePostgres(PostgresServer):
    def __init__(self) -> None:
        super().__init__(durable=True)

    def new_database(self, name: str) -> str:
        """Create an empty database; its SQLAlchemy URL."""
        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'server_version')"
            ).fetchall()
        return {str(k): str(v) for k, v in rows}


def available() -> bool:
    try:
        DurablePostgres()
    except RuntimeError:
        return False
    return True
