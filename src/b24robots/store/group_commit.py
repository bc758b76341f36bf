"""Group commit for the robot intake: the calls that arrive together are stored in one transaction.

One writer thread per process takes every call waiting in its queue, inserts them on a Core connection (no ORM
session) with one `INSERT ... ON CONFLICT (event_token) DO NOTHING RETURNING` (SQLite >= 3.35 and PostgreSQL
alike; the statement for each database is described where it is built, below), commits
once (one fsync) and only then wakes each caller with its row id. So the promise of the intake is kept: no
caller is told "stored" before its row is durable. A group whose transaction fails tells every caller of the
group (`StoreUnavailable` -> 503) and stores none of them; the writer goes on with the next group. A call the
schema or the database refuses (`IntegrityError`, `StoreRefused`) fails alone: its group is stored again
call by call.

The portal never resends a call, but a retried HTTP request can bring the same `event_token` twice: within a
group the first one is inserted and the others get its id as duplicates; across groups (and across processes
on PostgreSQL, where several web processes write at once) the unique index decides, and the loser reads the
stored id in the same transaction.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Executable, Float, Integer, Table, TextClause, func, select, text
from sqlalchemy.exc import IntegrityError

from b24robots.errors import StoreError, StoreRefused, StoreUnavailable
from b24robots.store.db import Database
from b24robots.store.journal import DEAD, NOTIFY_CHANNEL, QUEUED, NewInvocation, deadline_of
from b24robots.store.models import InvocationRow

log = logging.getLogger("b24robots.store")

MAX_GROUP = 512
"""Calls stored in one transaction at most; more waiting calls go into the next one."""

_TABLE: Table = InvocationRow.__table__  # type: ignore[assignment]


@dataclass
class _Pending:
    values: dict[str, Any]
    future: Future[tuple[int, bool]]


def invocation_values(
    new: NewInvocation,
    *,
    state: str,
    now: float,
    error: str = "",
    log_message: str = "",
    outputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The invocations row of a new robot call, as Core insert parameters (the columns `Journal` writes).

    `caller_token` is still the plain run-as user's token here (None on a call that cannot run): the
    writer encrypts it just before the insert (`GroupWriter._write`)."""
    keep = bool(new.caller_token) and new.caller_expires_at is not None and state == QUEUED
    return {
        "event_token": new.event_token,
        "installation_id": new.installation_id,
        "robot_code": new.robot_code,
        "origin": new.origin,
        "robot_version_id": new.robot_version_id,
        "workflow_id": new.workflow_id,
        "document_id": new.document_id,
        "document_type": new.document_type,
        "use_subscription": new.use_subscription,
        "timeout_duration": new.timeout_duration,
        "portal_ts": new.portal_ts,
        "auth_user_id": new.auth_user_id,
        "properties": new.properties,
        "inputs": new.inputs,
        "outputs": outputs,
        "log": [],
        "log_message": log_message,
        "state": state,
        "attempts": 0,
        "run_after": now,
        "error": error,
        "received_at": now,
        "deliver_attempts": 0,
        "deadline_at": deadline_of(new, now),
        "deliver_after": now if state == DEAD and new.use_subscription else None,
        "finished_at": now if state == DEAD else None,
        "caller_token": new.caller_token if keep else None,
        "caller_expires_at": new.caller_expires_at if keep else None,
    }


class GroupWriter:
    """Stores robot calls in groups, one transaction each; `store()` returns only after the commit."""

    def __init__(self, db: Database, *, max_group: int = MAX_GROUP, seal: Callable[[str], str] | None = None) -> None:
        """`seal` encrypts the run-as users' tokens (`CallerTokens.seal`); without it they are not kept."""
        self.db = db
        self.seal = seal
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._closed = False
        self._insert: Executable = _PG_INSERT
        self.groups = 0  # committed groups (for benchmarks and tests)
        self.calls = 0  # calls in them
        self.submitted = 0  # calls handed to the writer (committed, failed or waiting)

    # --- callers -----------------------------------------------------------------------------
    def store(
        self,
        new: NewInvocation,
        *,
        state: str = QUEUED,
        error: str = "",
        log_message: str = "",
        outputs: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> tuple[int, bool]:
        """Store one call and wait for its group's commit: (id, created); a known token is not stored again.

        Raises `StoreError` (`StoreUnavailable` when the database refused the write) if the group failed.
        """
        return self.submit(new, state=state, error=error, log_message=log_message, outputs=outputs, now=now).result()

    def submit(
        self,
        new: NewInvocation,
        *,
        state: str = QUEUED,
        error: str = "",
        log_message: str = "",
        outputs: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> Future[tuple[int, bool]]:
        """Queue one call; the future resolves after its group committed (or fails with the group)."""
        if self._closed:
            raise StoreUnavailable("the server is stopping", "the server is stopping")
        values = invocation_values(
            new,
            state=state,
            now=time.time() if now is None else now,
            error=error,
            log_message=log_message,
            outputs=outputs,
        )
        pending = _Pending(values, Future())
        self._ensure_thread()
        with self._count_lock:
            self.submitted += 1
        self._queue.put(pending)
        return pending.future

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop the writer thread."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    # --- the writer thread -------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="b24r-intake-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            # everything that arrived while the previous group was being committed goes together
            while len(group) < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Pending]) -> None:
        try:
            results = self._write(group)
        except (IntegrityError, StoreRefused) as exc:
            # not a duplicate token (those are handled in the statement): a row the schema refuses (an
            # installation deleted meanwhile) or data the database cannot hold (a NUL byte in PostgreSQL
            # text). Store the others one by one so only that call fails.
            if len(group) > 1:
                for one in group:
                    self._commit([one])
                return
            refused = exc if isinstance(exc, StoreRefused) else StoreError("the invocation could not be stored")
            self._fail(group, refused)
            return
        except StoreError as exc:
            self._fail(group, exc)
            return
        except Exception as exc:  # the writer must outlive any failure; the callers get a 503
            log.exception("storing %d robot calls failed", len(group))
            self._fail(group, StoreUnavailable(f"the journal could not be written: {type(exc).__name__}", str(exc)))
            return
        self.groups += 1
        self.calls += len(group)
        for pending, result in zip(group, results, strict=True):
            pending.future.set_result(result)

    @staticmethod
    def _fail(group: list[_Pending], exc: StoreError) -> None:
        for pending in group:
            pending.future.set_exception(exc)

    def _sealed(self, values: dict[str, Any]) -> dict[str, Any]:
        """The row as stored: the run-as user's token encrypted, or dropped without `seal`. Done here, in
        the writer thread, not in each caller's: the callers' threads then hand over their calls without
        pausing (encryption draws random bytes, which releases the GIL), so the groups stay as large."""
        plain = values.get("caller_token")
        if not plain:
            return values
        if self.seal is None:
            return {**values, "caller_token": None, "caller_expires_at": None}
        return {**values, "caller_token": self.seal(plain)}

    def _write(self, group: list[_Pending]) -> list[tuple[int, bool]]:
        first_of: dict[str, int] = {}  # token -> index of its first call in the group
        rows: list[dict[str, Any]] = []
        for i, pending in enumerate(group):
            token = pending.values["event_token"]
            if token not in first_of:
                first_of[token] = i
                rows.append(self._sealed(pending.values))
        ids: dict[str, tuple[int, bool]] = {}
        with self.db.write_core() as s:
            if self.db.is_sqlite:
                inserted = s.exec_driver_sql(_sqlite_insert_text(len(rows)), _sqlite_params(rows)).all()
            else:
                inserted = s.execute(self._insert, _pg_rows(rows)).all()
            for row_id, token in inserted:
                ids[token] = (row_id, True)
            known = [t for t in first_of if t not in ids]
            if known:  # stored by an earlier group or another process
                for row_id, token in s.execute(
                    select(_TABLE.c.id, _TABLE.c.event_token).where(_TABLE.c.event_token.in_(known))
                ).all():
                    ids[token] = (row_id, False)
            out: list[tuple[int, bool]] = []
            for i, pending in enumerate(group):
                token = pending.values["event_token"]
                if token not in ids:  # neither inserted nor found: roll the whole group back
                    raise StoreError("the invocation could not be stored")
                row_id, created = ids[token]
                out.append((row_id, created and first_of[token] == i))
            if not self.db.is_sqlite and any(_owes_work(ids, p.values) for p in group):
                _notify(s)
        return out


# PostgreSQL: the whole group as one `INSERT ... SELECT FROM json_to_recordset(:rows)`, the rows one JSON text.
# Its text and its one parameter are the same for every group, so psycopg converts the query once (its cache
# takes queries of <= 4096 characters and <= 50 parameters, psycopg/_queries.py); a multi-row VALUES statement
# is new text for every group size with 26 parameters per row, and parsing it cost about a third of the
# writer's CPU. The JSON columns travel as JSON text (json.dumps, what SQLAlchemy's JSON type sends: None as
# JSON null, as it does) cast to json by the server; floats as JSON numbers (repr, which round-trips exactly).
_SAMPLE = NewInvocation(
    event_token="",
    installation_id=0,
    robot_code="",
    origin="",
    robot_version_id=None,
    workflow_id="",
    document_id=[],
    document_type=[],
    use_subscription=True,
    timeout_duration=0,
    portal_ts=0,
    auth_user_id=None,
    properties={},
    inputs=None,
)
_COLUMNS = tuple(invocation_values(_SAMPLE, state=QUEUED, now=0.0))  # the columns the intake writes
_JSON_COLUMNS = frozenset(c for c in _COLUMNS if isinstance(_TABLE.c[c].type, JSON))


_NUL = "PostgreSQL text fields cannot contain NUL (0x00) bytes"


def _pg_rows(rows: list[dict[str, Any]]) -> dict[str, str]:
    for row in rows:
        # in the JSON text a NUL is `\u0000`, which the server refuses with a vaguer reason than psycopg's
        if any(isinstance(v, str) and "\x00" in v for k, v in row.items() if k not in _JSON_COLUMNS):
            raise StoreRefused(f"the database cannot hold this data: {_NUL}", _NUL)
    return {"rows": json.dumps([{**row, **{c: json.dumps(row[c]) for c in _JSON_COLUMNS}} for row in rows])}


def _pg_type(column: str) -> str:
    kind = _TABLE.c[column].type
    for base, name in ((Boolean, "boolean"), (Integer, "integer"), (Float, "float8")):
        if isinstance(kind, base):
            return name
    return "text"  # strings (the column's own length check applies on insert) and JSON text


def _pg_insert_text() -> TextClause:
    names = ", ".join(_COLUMNS)
    values = ", ".join(f"r.{c}::json" if c in _JSON_COLUMNS else f"r.{c}" for c in _COLUMNS)
    record = ", ".join(f"{c} {_pg_type(c)}" for c in _COLUMNS)
    # the names come from our own table, not from any input
    return text(
        f"INSERT INTO {_TABLE.name} ({names}) SELECT {values} "  # noqa: S608
        f"FROM json_to_recordset(CAST(:rows AS json)) AS r({record}) "
        "ON CONFLICT (event_token) DO NOTHING RETURNING id, event_token"
    )


_PG_INSERT = _pg_insert_text()


# SQLite: one multi-row `INSERT ... VALUES (?, ...), ... RETURNING` per group size, its parameters bound by the
# driver itself (`exec_driver_sql`: SQLAlchemy still maps errors and runs the transaction, but no longer
# processes 26 binds per row, about a tenth of the intake's CPU). The JSON columns go as json.dumps text,
# what SQLAlchemy's JSON type writes (None as JSON null); booleans as the driver's 1/0, as its Boolean type.
# The driver keeps the compiled statements (sqlite3's cache, 128 per connection); the texts are built once.
@functools.lru_cache(maxsize=MAX_GROUP)
def _sqlite_insert_text(n: int) -> str:
    row = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    # the names come from our own table, not from any input
    return (
        f"INSERT INTO {_TABLE.name} ({', '.join(_COLUMNS)}) VALUES {', '.join([row] * n)} "  # noqa: S608
        "ON CONFLICT (event_token) DO NOTHING RETURNING id, event_token"
    )


def _sqlite_params(rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    out: list[Any] = []
    for row in rows:
        out.extend(json.dumps(row[c]) if c in _JSON_COLUMNS else row[c] for c in _COLUMNS)
    return tuple(out)


def _owes_work(ids: dict[str, tuple[int, bool]], values: dict[str, Any]) -> bool:
    created = ids.get(values["event_token"], (0, False))[1]
    return created and (values["state"] == QUEUED or values["deliver_after"] is not None)


def _notify(s: Connection) -> None:
    s.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")))
