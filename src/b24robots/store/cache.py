"""Small in-memory caches of what every robot call reads: the installation's verification data and the
register's answer for a CODE.

An entry is valid while it is younger than its TTL (`B24R_CACHE_SECONDS`) and the database's cache
generation has not moved since it was read. The generation moves after every write that changes cached
data in this process (`Database.changing_cached`), and on PostgreSQL when another process announces such a
write on the `b24r_cache` channel (jobs/wakeup.py listens). On SQLite another process (the CLI) is seen
when the TTL runs out. A value is stored with the generation taken before it was read, so a change that
lands while it is being read is never hidden.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

from b24robots.store.db import Database

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """key -> value for `seconds` at most; `seconds <= 0` caches nothing."""

    def __init__(self, db: Database, seconds: float, *, max_entries: int = 10_000) -> None:
        self.db = db
        self.seconds = seconds
        self.max_entries = max_entries
        self._data: dict[K, tuple[V, int, float]] = {}
        self._lock = threading.Lock()

    def generation(self) -> int:
        """Take this before reading the database, and pass it to `put`."""
        return self.db.cache_generation

    def get(self, key: K) -> tuple[bool, V | None]:
        """(found, value)."""
        if self.seconds <= 0:
            return False, None
        entry = self._data.get(key)
        if entry is None:
            return False, None
        value, generation, expires = entry
        if generation != self.db.cache_generation or time.monotonic() >= expires:
            return False, None
        return True, value

    def put(self, key: K, value: V, generation: int) -> None:
        if self.seconds <= 0 or generation != self.db.cache_generation:
            return
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[key] = (value, generation, time.monotonic() + self.seconds)

    def forget(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)
