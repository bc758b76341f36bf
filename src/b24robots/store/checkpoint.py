"""SQLite WAL checkpoints off the commit path.

By default SQLite checkpoints inside a commit: the connection whose COMMIT takes the WAL past
`wal_autocheckpoint` pages (1000) copies the WAL into the database file and fsyncs it before COMMIT
returns (sqlite3WalDefaultHook in sqlite's wal.c/main.c). For the intake that one group of calls then
waits tens of milliseconds for a checkpoint of everyone's writes: the acknowledgement latency's tail.
Our connections turn autocheckpoint off (`PRAGMA wal_autocheckpoint=0`, store/db.py) and this thread
runs `PRAGMA wal_checkpoint(PASSIVE)` every `interval` seconds on a connection of its own instead.
A passive checkpoint never waits for or blocks writers and readers (it copies what no reader still
needs), so commits keep their own fsync only; the WAL then grows by at most what is written between
two checkpoints, and a writer starts it from the beginning once a checkpoint has copied it all.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from typing import Any

log = logging.getLogger("b24robots.store")

INTERVAL = 0.25
"""Seconds between two checkpoints; at a few thousand acknowledged calls a second that is several
hundred pages of WAL, less than the 1000 at which SQLite would have checkpointed inside a commit."""


class Checkpointer:
    """One daemon thread checkpointing one SQLite file; it ends with `stop()` or when `owner` is gone."""

    def __init__(self, path: str, owner: Any, *, interval: float = INTERVAL, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.interval = interval
        self.busy_timeout_ms = busy_timeout_ms
        self.runs = 0  # checkpoints run (for tests and benchmarks)
        self.last: tuple[int, int] = (0, 0)  # the last run's (frames in the WAL, frames copied of them)
        self._owner = weakref.ref(owner)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="b24r-sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """One passive checkpoint: (frames in the WAL, frames of them now in the database file)."""
        _busy, wal_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs += 1
        self.last = (int(wal_frames), int(copied))
        return self.last

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        except sqlite3.Error as exc:  # the database's own connections report the problem to their callers
            log.warning("the SQLite checkpoint thread could not open the database: %s", exc)
            return
        try:
            conn.execute("PRAGMA wal_autocheckpoint=0")
            while not self._stop.wait(self.interval) and self._owner() is not None:
                try:
                    self.checkpoint(conn)
                except sqlite3.Error as exc:  # a locked or failing database: try again next time
                    log.debug("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()
