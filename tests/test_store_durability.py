"""Which writes wait for the disk: every write by default; `write(durable=False)` (leases, the limiter's
buckets) commits without waiting, on SQLite (`synchronous=NORMAL` in WAL mode) and PostgreSQL
(`synchronous_commit=off` for that transaction only). That leases still hold is
tests/test_store_journal_rules.py's. Real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from b24robots.store.db import Database


def test_sqlite_writes_are_full_sync_unless_asked_not_to_wait(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        with db.write() as s:
            assert s.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        with db.write(durable=False) as s:
            assert s.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            s.execute(text("INSERT INTO t (v) VALUES ('light')"))
        with db.write() as s:
            assert s.execute(text("PRAGMA synchronous")).scalar() == 2  # the light connection is not the writer's
            s.execute(text("INSERT INTO t (v) VALUES ('durable')"))
        with db.read() as s:
            assert [r[0] for r in s.execute(text("SELECT v FROM t ORDER BY id"))] == ["light", "durable"]
    finally:
        db.dispose()
    again = Database(f"sqlite:///{tmp_path / 'd.db'}")  # a new process's view: both are in the file
    try:
        with again.read() as s:
            assert [r[0] for r in s.execute(text("SELECT v FROM t ORDER BY id"))] == ["light", "durable"]
    finally:
        again.dispose()


def test_a_light_write_rolls_back_like_any_other(db: Database) -> None:
    with db.write() as s:
        s.execute(text("CREATE TABLE light_t (v TEXT)"))
    try:
        with db.write(durable=False) as s:
            s.execute(text("INSERT INTO light_t (v) VALUES ('lost')"))
            raise RuntimeError("the caller failed")
    except RuntimeError:
        pass
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM light_t")).scalar() == 0


def test_postgresql_turns_synchronous_commit_off_for_that_transaction_only(db: Database) -> None:
    if db.is_sqlite:
        return  # the SQLite side is the test above
    # the suite's server runs with synchronous_commit=off; this database's connections start with it on
    with db.write() as s:
        name = s.execute(text("SELECT current_database()")).scalar()
        s.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = on'))
    db.engine.dispose()  # new connections take the database's setting
    with db.read() as s:
        default = s.execute(text("SHOW synchronous_commit")).scalar()
    assert default == "on"
    for _ in range(3):  # every pooled connection the light writes may have used
        with db.write(durable=False) as s:
            assert s.execute(text("SHOW synchronous_commit")).scalar() == "off"
    for _ in range(3):
        with db.write() as s:
            assert s.execute(text("SHOW synchronous_commit")).scalar() == default
