"""The sql kind on a real SQLite file and the PostgreSQL server the suite starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from b24robots.connections.hub import ConnectionHub, RunConnections
from b24robots.errors import ConfigError, SqlError
from tests.connections.support import SECRET, MemorySource, config, dumps
from tests.pgserver import PostgresServer


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def dwh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A small warehouse with a counterparties table, on SQLite and on PostgreSQL."""
    ddl = [
        "create table counterparties (id integer primary key, inn varchar(12), name varchar(200), "
        "balance numeric(12,2))",
        "insert into counterparties values (1, '7701234567', 'ООО Ромашка', 100.50)",
        "insert into counterparties values (2, '500100732259', 'ИП Васильков', 0)",
    ]
    if request.param == "sqlite":
        import sqlite3

        path = tmp_path / "dwh.db"
        with sqlite3.connect(path) as conn:
            for stmt in ddl:
                conn.execute(stmt)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = f"dwh_{abs(hash(str(tmp_path))) % 10**8}"
    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(server.url(name).replace("+psycopg", ""), autocommit=True) as conn:
        for stmt in ddl:
            conn.execute(stmt)
    # a password in the URL is split off and kept as a secret (trust auth ignores it here)
    yield server.url(name).replace("postgres@", f"postgres:{SECRET}@")


def run_for(url: str, **settings: object) -> tuple[ConnectionHub, RunConnections]:
    cfg = config("sql", name="dwh", url=url, **settings)
    hub = ConnectionHub(MemorySource(cfg))
    return hub, hub.scope(robot="t", declared=["dwh"], member_id="m1")


def test_parameterised_query_returns_rows(dwh_url: str) -> None:
    hub, run = run_for(dwh_url)
    rows = run.sql("dwh").query("select id, name, balance from counterparties where inn = :inn", inn="7701234567")
    assert len(rows) == 1 and rows[0]["name"] == "ООО Ромашка" and float(rows[0]["balance"]) == 100.5
    assert run.sql("dwh").first("select name from counterparties where inn = :inn", inn="nope") is None
    # the value is bound, never spliced into the text
    assert run.sql("dwh").query("select id from counterparties where name = :n", n="x' or '1'='1") == []
    assert run.records[0].method == "SELECT" and run.records[0].status == 1
    assert SECRET not in dumps(run.records)
    hub.close()


def test_read_only_by_default(dwh_url: str) -> None:
    hub, run = run_for(dwh_url)
    with pytest.raises(SqlError, match="read-only"):
        run.sql("dwh").execute("update counterparties set name = :n where id = 1", n="x")
    assert run.sql("dwh").first("select name from counterparties where id = 1") == {"name": "ООО Ромашка"}
    hub.close()
    hub, run = run_for(dwh_url, read_only=False)
    assert run.sql("dwh").execute("update counterparties set name = :n where id = 1", n="ООО Ромашка+") == 1
    assert run.sql("dwh").first("select name from counterparties where id = 1") == {"name": "ООО Ромашка+"}
    hub.close()


def test_row_limit_and_bad_statements(dwh_url: str) -> None:
    hub, run = run_for(dwh_url, row_limit=1)
    with pytest.raises(SqlError, match="more than 1 rows"):
        run.sql("dwh").query("select * from counterparties")
    with pytest.raises(SqlError) as err:
        run.sql("dwh").query("select * from no_such_table")
    assert "no_such_table" in str(err.value) and SECRET not in str(err.value)
    hub.close()
    hub, run = run_for(dwh_url, read_only=False)
    with pytest.raises(SqlError, match="returns no rows"):
        run.sql("dwh").query("update counterparties set name = name where 1 = 0")
    hub.close()


def test_statement_timeout(dwh_url: str) -> None:
    hub, run = run_for(dwh_url, timeout=0.3)
    slow = (
        "select pg_sleep(3)"
        if dwh_url.startswith("postgresql")
        else "with recursive c(x) as (select 1 union all select x + 1 from c where x < 100000000) "
        "select count(*) from c"
    )
    with pytest.raises(SqlError, match="longer than the timeout") as err:
        run.sql("dwh").query(slow)
    assert err.value.code == "TIMEOUT"
    hub.close()


def test_password_in_the_url_becomes_a_secret() -> None:
    cfg = config("sql", url=f"postgresql+psycopg://robot:{SECRET}@db.example/dwh")
    assert SECRET not in str(cfg.settings) and cfg.secret("password") == SECRET
    assert SECRET not in repr(cfg)
    with pytest.raises(ConfigError, match="not a SQLAlchemy URL"):
        config("sql", url="nonsense")
