"""SQLite's WAL is checkpointed by a thread of its own, never inside a commit: a commit whose WAL passes
SQLite's 1000-page autocheckpoint would otherwise copy everyone's writes into the database file and fsync
it before returning (the intake's latency tail). Real SQLite files."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from b24robots.store.db import Database

PAGE = 4096


def fill(db: Database, rows: int) -> None:
    with db.write() as s:
        s.execute(text("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, body BLOB)"))
    for _ in range(rows // 50):
        with db.write() as s:  # one commit per 50 rows of 4 KiB: about 3000 pages in many commits
            s.execute(text("INSERT INTO filler (body) VALUES " + ", ".join(["(randomblob(4000))"] * 50)))


def wal_pages(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size // PAGE if wal.exists() else 0


def test_commits_leave_the_wal_to_the_checkpoint_thread(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    db = Database(f"sqlite:///{path}")
    try:
        assert db.checkpointer is not None
        db.checkpointer.stop()  # nothing checkpoints now: what the commits do alone shows
        with db.write() as s:
            assert s.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
        fill(db, 3000)
        # with SQLite's default a commit would have checkpointed at 1000 pages and the WAL restarted
        assert wal_pages(path) > 2000
    finally:
        db.dispose()


def test_the_checkpoint_thread_copies_the_wal_into_the_database_soon(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    db = Database(f"sqlite:///{path}")
    try:
        checkpointer = db.checkpointer
        assert checkpointer is not None
        fill(db, 1500)
        with db.read() as s:
            assert s.execute(text("SELECT count(*) FROM filler")).scalar() == 1500
        after = checkpointer.runs + 1  # a run that began after the last commit
        deadline = time.monotonic() + 10
        while True:  # until such a checkpoint has copied every frame in the WAL into the database file
            frames, copied = checkpointer.last
            if checkpointer.runs > after and frames > 0 and copied == frames:
                break
            assert time.monotonic() < deadline, f"no complete checkpoint: {checkpointer.last}"
            time.sleep(0.05)
        assert path.stat().st_size > 1500 * 3500  # the rows (4000 random bytes each) are in the database file
        fill(db, 1000)  # the next writer starts the WAL from the beginning: it does not grow without end
        assert wal_pages(path) < 2 * 1500
    finally:
        db.dispose()


def test_the_thread_ends_with_the_database(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'b.db'}")
    checkpointer = db.checkpointer
    assert checkpointer is not None
    db.dispose()
    assert not checkpointer._thread.is_alive()
    assert Database("sqlite://").checkpointer is None  # in memory: no WAL, no thread
