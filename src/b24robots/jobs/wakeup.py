"""Immediate wake-ups for workers and the sender.

In one process (the SQLite default) the intake calls `notify()` directly. With PostgreSQL every
write that creates work also runs `pg_notify`, and `PgListener` turns those notifications into
`notify()` calls in each worker process, so nobody waits for a poll interval.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import psycopg

from b24robots.store.db import CACHE_CHANNEL
from b24robots.store.journal import NOTIFY_CHANNEL

log = logging.getLogger("b24robots.jobs")


class Wakeup:
    """A level-triggered, thread-safe signal that an asyncio loop can wait on with a timeout."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop
            self._event = asyncio.Event()
            if self._pending:
                self._event.set()

    def notify(self) -> None:
        with self._lock:
            self._pending = True
            loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> bool:
        """Wait until notified or `timeout` seconds pass; True if notified. Clears the signal."""
        assert self._event is not None, "bind() the wakeup to the running loop first"
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            notified = True
        except TimeoutError:
            notified = False
        with self._lock:
            self._pending = False
            self._event.clear()
        return notified


class PgListener:
    """LISTEN on the queue channel in a thread and wake the given wakeups on every notification."""

    def __init__(self, dsn: str, *wakeups: Wakeup, on_cache_change: Callable[[], None] | None = None) -> None:
        self.dsn = dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        self.wakeups = wakeups
        self.on_cache_change = on_cache_change  # another process changed installations or the register
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="b24r-pg-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if self.on_cache_change is not None:
                        conn.execute(f"LISTEN {CACHE_CHANNEL}")
                        # changes made while we were not listening (first start, a lost connection)
                        self.on_cache_change()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0, stop_after=1):
                            if note.channel == CACHE_CHANNEL:
                                if self.on_cache_change is not None:
                                    self.on_cache_change()
                                continue
                            for w in self.wakeups:
                                w.notify()
            except psycopg.Error as exc:
                log.warning("queue listener lost its connection (%s); reconnecting", type(exc).__name__)
                self._stop.wait(1.0)
