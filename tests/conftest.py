"""Shared fixtures: databases on SQLite and on a real PostgreSQL server started here."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from b24robots.store.db import Database
from tests.pgserver import PostgresServer

_counter = itertools.count()

# CI: the same examples on every run (no example database, no random seed) and a bounded number of
# them, so a red build is reproducible and the suite's time does not depend on luck. Tests that set
# their own max_examples keep it; everything else gets 50 instead of Hypothesis's 100.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A migrated database used as the template of every per-test database."""
    with psycopg.connect(pg_server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE DATABASE b24r_template")
    db = Database(pg_server.url("b24r_template"))
    db.migrate()
    db.dispose()
    return "b24r_template"


def new_pg_database(pg_server: PostgresServer, template: str) -> str:
    name = f"b24r_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return pg_server.url(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database: SQLite file and PostgreSQL, each test on its own."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'test.db'}")
        database.migrate()
    else:
        server = request.getfixturevalue("pg_server")
        template = request.getfixturevalue("pg_template")
        database = Database(new_pg_database(server, template))
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    database.migrate()
    yield database
    database.dispose()
