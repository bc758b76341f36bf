"""Engines and sessions for SQLite (the embedded default) and PostgreSQL (scale-out).

SQLite runs in WAL mode with a busy timeout and full fsync; write transactions start with
`BEGIN IMMEDIATE` so two writers never deadlock on a lock upgrade. Read sessions use a separate
engine whose transactions stay deferred, so readers never wait for writers. A commit never
checkpoints the WAL: a thread of its own does (store/checkpoint.py). Writes whose loss in a crash of the
machine costs only a delay (leases, the rate limiter's buckets) may commit without waiting for the disk
(`write(durable=False)`): SQLite's `synchronous=NORMAL` in WAL mode, PostgreSQL's `synchronous_commit=off`;
either keeps the database consistent and loses nothing when only our process dies.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from b24robots.errors import ConfigError, StoreError, StoreRefused, StoreUnavailable
from b24robots.store.checkpoint import Checkpointer

BUSY_TIMEOUT_MS = 10_000
CACHE_CHANNEL = "b24r_cache"
"""PostgreSQL NOTIFY channel on which a process announces a change to cached data (store/cache.py)."""
WRITE_FAILURE_MEMORY = 10.0
"""Seconds a failed write keeps the database reported unhealthy unless a write succeeds since."""


_MEMORY_ONLY: ContextVar[bool] = ContextVar("b24r_memory_only", default=False)


class NeedsDatabase(Exception):
    """Raised by any read or write inside `memory_only()`: the work needs the database, so the caller
    does it again where it may block (a worker thread). Not a `StoreError`: nothing failed."""


@contextmanager
def memory_only() -> Iterator[None]:
    """Within this block (in this thread or task) the database refuses to be used: `NeedsDatabase`.

    The robot intake answers calls whose portal and robot are in memory on the event loop, without a
    thread hand-off; a call that needs a read is done again in the thread pool (web/robot_endpoint.py).
    """
    token = _MEMORY_ONLY.set(True)
    try:
        yield
    finally:
        _MEMORY_ONLY.reset(token)


_T = TypeVar("_T")


async def read_off_loop(read: Callable[..., _T], *args: Any) -> _T:
    """`read(*args)` on the event loop when its answer is in memory (a cache), else in a thread.

    For reads only: a read that needs the database raises `NeedsDatabase` before any I/O and is then
    done again where it may block, so the common cached case costs no thread hand-off."""
    try:
        with memory_only():
            return read(*args)
    except NeedsDatabase:
        return await asyncio.to_thread(read, *args)


def _reason(exc: DBAPIError) -> str:
    # the driver's own first line ("database or disk is full", "attempt to write a readonly
    # database", "connection refused"): no statement text and no parameters, which may hold data
    text = str(exc.orig) if exc.orig is not None else type(exc).__name__
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


def store_error(exc: BaseException, action: str) -> StoreError | None:
    """The `StoreError` a database failure means, or None when `exc` is not one (let it through).

    The one place database errors are classified:

    - `IntegrityError` is None: a constraint decides (a duplicate, a vanished parent); callers handle it.
    - `DataError` (PostgreSQL: NUL in text, a value out of range, bad JSON escapes) and SQLite's
      OverflowError for an integer beyond 64 bits are `StoreRefused`: this data, not the database.
    - every other driver error (`OperationalError`: locked, disk full, read-only, connection lost;
      `InterfaceError`, ...) and an exhausted connection pool are `StoreUnavailable`: try again later.
    """
    if isinstance(exc, IntegrityError):
        return None
    if isinstance(exc, DataError):
        reason = _reason(exc)
        return StoreRefused(f"the database cannot hold this data: {reason}", reason)
    if isinstance(exc, OverflowError) and "SQLite" in str(exc):  # sqlite3 refuses before SQLAlchemy sees it
        reason = str(exc)[:200]
        return StoreRefused(f"the database cannot hold this data: {reason}", reason)
    if isinstance(exc, DBAPIError):
        reason = _reason(exc)
        return StoreUnavailable(f"the database cannot be {action}: {reason}", reason)
    if isinstance(exc, PoolTimeout):
        reason = "no database connection became free in time"
        return StoreUnavailable(f"the database cannot be {action}: {reason}", reason)
    return None


def private_dir(path: Path) -> None:
    """Create `path` as 0700, or tighten it to 0700 when it is ours and others may read it."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.chmod(path, 0o700)


def private_sqlite_files(db_path: Path) -> None:
    """The database holds the journal's inputs and outputs and the admins' password hashes: only our
    user may read it. The file is created 0600 before SQLite opens it; SQLite gives its -wal and -shm
    files the mode of the database file (os_unix.c, findCreateFileMode), and files left lax by an
    older version are tightened here."""
    if not db_path.parent.exists():
        private_dir(db_path.parent)
    if not db_path.exists():
        os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT, 0o600))
    for path in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"), Path(f"{db_path}-journal")):
        if path.exists() and path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
            os.chmod(path, 0o600)


def _sqlite_engine(url: str, *, immediate: bool, checkpoints: bool, synchronous: str = "FULL") -> Engine:
    """`checkpoints=False`: this engine's commits leave the WAL to the checkpoint thread; `synchronous`:
    FULL (a commit is on disk when it returns) or NORMAL (on disk by the next FULL commit or checkpoint)."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # the driver must not open transactions on its own: we emit BEGIN ourselves
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        if not checkpoints:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Owns the engines; hands out write and read sessions."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError(
                f"B24R_DATABASE_URL {url!r} is not a database URL; use sqlite:///path.db or "
                "postgresql+psycopg://user:password@host/dbname"
            ) from None
        self.url = url
        self.dialect = parsed.get_backend_name()
        self._checkpointer: Checkpointer | None = None
        if self.dialect == "sqlite":
            on_disk = bool(parsed.database) and parsed.database != ":memory:"
            if on_disk:
                private_sqlite_files(Path(str(parsed.database)))
            self.engine = _sqlite_engine(url, immediate=True, checkpoints=not on_disk)
            self.read_engine = _sqlite_engine(url, immediate=False, checkpoints=not on_disk)
            self.light_engine = _sqlite_engine(url, immediate=True, checkpoints=not on_disk, synchronous="NORMAL")
            if on_disk:
                self._checkpointer = Checkpointer(str(parsed.database), self, busy_timeout_ms=BUSY_TIMEOUT_MS)
                self._checkpointer.start()
        elif self.dialect == "postgresql":
            if parsed.get_driver_name() != "psycopg":
                raise ConfigError("use the psycopg 3 driver: B24R_DATABASE_URL=postgresql+psycopg://...")
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self.read_engine = self.engine
            self.light_engine = self.engine
        else:
            raise ConfigError(f"database {self.dialect!r} is not supported; use SQLite or PostgreSQL")
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._light_writer = sessionmaker(self.light_engine, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write_failure: tuple[float, str] | None = None
        self.cache_generation = 0  # moves on every change to cached data (store/cache.py)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception.

        `durable=False`: the commit returns before the disk has it (SQLite `synchronous=NORMAL`, PostgreSQL
        `synchronous_commit=off` for this transaction). A crash of the machine may undo it (the database
        stays consistent; a later durable commit makes it durable too); our process dying does not. Only
        for writes whose loss costs a delay, never an answer or a call: leases, the limiter's buckets.
        On SQLite it takes the same lock as every writer, so it cannot overtake a durable commit.

        On SQLite the writers of this process queue on a lock first: SQLite's own busy handler
        polls with sleeps of up to 100 ms, which turned lock contention into a long latency tail.
        Other processes still meet at `BEGIN IMMEDIATE` with the busy timeout.

        A database that cannot take the write (disk full, read-only file, server gone) raises
        `StoreUnavailable` with the database's reason, and `health()` reports it until a write
        succeeds again; data it cannot hold raises `StoreRefused` (health unaffected); constraint
        violations (`IntegrityError`) pass through unchanged (`store_error` classifies them all).
        """
        if _MEMORY_ONLY.get():
            raise NeedsDatabase
        with self._writing():
            if self._write_lock is None:
                with self._writer() as session, session.begin():
                    if not durable:  # LOCAL: this transaction only, the pooled connection keeps its default
                        session.execute(text("SET LOCAL synchronous_commit TO OFF"))
                    yield session
            else:
                writer = self._writer if durable else self._light_writer
                with self._write_lock, writer() as session, session.begin():
                    yield session

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The failure rules of every write transaction (`write`, `write_core`)."""
        try:
            yield
        except (DBAPIError, PoolTimeout, OverflowError) as exc:
            mapped = store_error(exc, "written")
            if mapped is None:
                raise
            if isinstance(mapped, StoreUnavailable):  # refused data says nothing about the database's health
                self._write_failure = (time.monotonic(), mapped.reason)
            raise mapped from None
        self._write_failure = None

    @contextmanager
    def write_core(self) -> Iterator[Connection]:
        """`write()` on a Core connection instead of an ORM session, for the group writer's one statement:
        the same lock, `BEGIN IMMEDIATE`, commit and failure rules, without the session's work per
        transaction (about a quarter of the writer's CPU per group of 8 calls, bench/analysis.md)."""
        if _MEMORY_ONLY.get():
            raise NeedsDatabase
        with self._writing():
            if self._write_lock is None:
                with self.engine.begin() as conn:
                    yield conn
            else:
                with self._write_lock, self.engine.begin() as conn:
                    yield conn

    @contextmanager
    def changing_cached(self) -> Iterator[Session]:
        """A write transaction that changes cached data (installations, the register).

        On PostgreSQL the other processes are told in the same transaction (NOTIFY on `CACHE_CHANNEL` is
        delivered on commit); this process's caches are invalidated once the transaction is over.
        """
        if _MEMORY_ONLY.get():
            raise NeedsDatabase
        try:
            with self.write() as s:
                yield s
                if not self.is_sqlite:
                    s.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CACHE_CHANNEL})
        finally:
            self.invalidate_caches()

    def invalidate_caches(self) -> None:
        """Every cached read of this database is stale from now on."""
        self.cache_generation += 1

    @contextmanager
    def read(self) -> Iterator[Session]:
        if _MEMORY_ONLY.get():
            raise NeedsDatabase
        try:
            with self._reader() as session, session.begin():
                yield session
        except (DBAPIError, PoolTimeout, OverflowError) as exc:
            mapped = store_error(exc, "read")
            if mapped is None:
                raise
            raise mapped from None

    def ping(self) -> bool:
        try:
            with self.read_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except (DBAPIError, PoolTimeout):
            return False

    def health(self) -> tuple[bool, str]:
        """(ok, reason): the database answers and takes writes.

        A write probe that touches storage (SQLite: the header's `user_version`, rewritten with the
        same value; PostgreSQL: a read-write transaction check) runs each time, and a failed real
        write keeps the answer unhealthy for `WRITE_FAILURE_MEMORY` seconds unless a later write
        succeeded — a probe can pass where a larger insert does not (space left in the WAL).
        """
        failure = self._write_failure
        try:
            with self.write() as s:
                if self.is_sqlite:
                    version = s.execute(text("PRAGMA user_version")).scalar() or 0
                    s.execute(text(f"PRAGMA user_version = {int(version)}"))
                else:
                    if s.execute(text("SHOW transaction_read_only")).scalar() == "on":
                        return False, "the database is read-only"
        except StoreUnavailable as exc:
            return False, exc.reason
        if failure is not None and time.monotonic() - failure[0] < WRITE_FAILURE_MEMORY:
            if self._write_failure is None:  # only the probe passed: that is no proof for real writes
                self._write_failure = failure
            return False, failure[1]
        return True, ""

    def migrate(self) -> None:
        """Bring the schema to the newest migration."""
        from b24robots.store.migrate import upgrade

        try:
            upgrade(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot migrate the database at {self.safe_url}: {exc.orig}") from None

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def checkpointer(self) -> Checkpointer | None:
        """The WAL checkpoint thread of an SQLite file (None on PostgreSQL and in-memory SQLite)."""
        return self._checkpointer

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        for other in {self.read_engine, self.light_engine} - {self.engine}:
            other.dispose()
