"""The `sql` kind: parameterised statements against a SQLAlchemy URL, read-only by default.

Values travel only as bind parameters (``:name``). Read-only uses what the database offers: a
``READ ONLY`` transaction on PostgreSQL and MySQL, ``PRAGMA query_only`` on SQLite. The statement
timeout is ``SET LOCAL statement_timeout`` on PostgreSQL and a progress handler on SQLite; on other
dialects the connection's timeout bounds the wait for a connection only.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import threading
import time
import uuid
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from b24robots.connections.base import Budget, CallRecord, Gate, Recorder, redact
from b24robots.connections.config import ConnectionConfig
from b24robots.errors import ConnectionCallError, ConnectionUnreachable, SqlError

_SQLITE_STEPS = 1000


def _plain(value: Any) -> Any:
    """Values that can cross into stored code: JSON types, dates, decimals; the rest as text."""
    if value is None or isinstance(value, bool | int | float | str | decimal.Decimal | _dt.date | _dt.time):
        return value
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


class SqlEngine:
    """The long-lived side of a sql connection: the engine (pool) and the gate."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self.name = config.name
        self.gate = Gate(
            config.name, int(config.get("concurrency")), float(config.get("rate")), int(config.get("burst"))
        )
        self._secrets = config.secret_values()
        try:
            url = make_url(str(config.get("url")))
        except ArgumentError:
            raise ConnectionCallError(self.name, "the URL is not a SQLAlchemy URL", code="BAD") from None
        if config.secret("password"):
            url = url.set(password=config.secret("password"))
        self.dialect = url.get_backend_name()
        timeout = float(config.get("timeout"))
        connect_args: dict[str, Any] = {}
        if self.dialect == "postgresql":
            connect_args["connect_timeout"] = max(1, int(timeout))
        elif self.dialect == "sqlite":
            connect_args["check_same_thread"] = False
        try:
            self.engine: Engine = create_engine(
                url,
                connect_args=connect_args,
                pool_pre_ping=True,
                **(
                    {}
                    if self.dialect == "sqlite"
                    else {"pool_size": max(1, int(config.get("concurrency"))), "pool_timeout": timeout}
                ),
            )
        except (NoSuchModuleError, ImportError):
            raise ConnectionCallError(
                self.name,
                f"the {self.dialect} driver is not installed; install the matching extra (e.g. b24robots[mysql])",
                code="BAD",
            ) from None
        self._local = threading.local()
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", self._sqlite_connect)

    def _sqlite_connect(self, dbapi_conn: Any, _record: Any) -> None:
        local = self._local

        def progress() -> int:
            deadline = getattr(local, "deadline", None)
            return 1 if deadline is not None and time.monotonic() > deadline else 0

        dbapi_conn.set_progress_handler(progress, _SQLITE_STEPS)
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA query_only = {'ON' if self.config.get('read_only') else 'OFF'}")
        cursor.close()

    def close(self) -> None:
        self.engine.dispose()

    def run(
        self,
        statement: str,
        params: dict[str, Any],
        *,
        budget: Budget,
        record: Recorder | None,
        fetch: bool,
    ) -> list[dict[str, Any]] | int:
        if not isinstance(statement, str) or not statement.strip():
            raise SqlError(self.name, "the statement is empty")
        words = " ".join(statement.split())
        rec = CallRecord(self.name, "sql", words.split(" ", 1)[0].upper(), words[:120])
        if self.config.get("log_bodies"):
            rec.request_body = words[:4000]
        started = time.perf_counter()
        try:
            timeout = budget.remaining(float(self.config.get("timeout")))
            if timeout <= 0:
                raise ConnectionCallError(self.name, "the run has no time left for this query", code="BUSY")
            with self.gate.slot(timeout):
                result = self._execute(statement, params, timeout, fetch, rec)
            return result
        except ConnectionCallError as exc:
            rec.error = redact(str(exc), self._secrets)
            raise
        finally:
            rec.duration_ms = (time.perf_counter() - started) * 1000
            if record is not None:
                record(rec)

    def _execute(
        self, statement: str, params: dict[str, Any], timeout: float, fetch: bool, rec: CallRecord
    ) -> list[dict[str, Any]] | int:
        read_only = bool(self.config.get("read_only"))
        limit = int(self.config.get("row_limit"))
        try:
            with self.engine.connect() as conn:
                if self.dialect == "sqlite":
                    self._local.deadline = time.monotonic() + timeout
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
                        if read_only:
                            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                    elif self.dialect in ("mysql", "mariadb") and read_only:
                        conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
                    result = conn.execute(text(statement), params)
                    if not fetch:
                        rec.status = max(0, result.rowcount)
                        return int(result.rowcount)
                    if not result.returns_rows:
                        raise SqlError(self.name, "the statement returns no rows; use execute() for writes")
                    keys = list(result.keys())
                    rows = result.fetchmany(limit + 1)
                    if len(rows) > limit:
                        raise SqlError(
                            self.name, f"the query returns more than {limit} rows (row_limit); add LIMIT or narrow it"
                        )
                    out = [{k: _plain(v) for k, v in zip(keys, row, strict=True)} for row in rows]
                    rec.status = len(out)
                    rec.bytes = sum(len(str(r)) for r in out)
                    return out
        except ConnectionCallError:
            raise
        except DBAPIError as exc:
            raise self._error(exc) from None
        except SQLAlchemyError as exc:
            raise SqlError(
                self.name, redact(type(exc).__name__ + ": " + str(exc).split("\n", 1)[0], self._secrets)
            ) from None
        finally:
            self._local.deadline = None

    def _error(self, exc: DBAPIError) -> ConnectionCallError:
        orig = str(exc.orig).strip().split("\n", 1)[0]
        low = orig.lower()
        if exc.connection_invalidated or ("connection" in low and ("refused" in low or "could not" in low)):
            return ConnectionUnreachable(self.name, "the database cannot be reached")
        if "read-only" in low or "readonly" in low or "read only" in low:
            return SqlError(self.name, "the connection is read-only: the statement would write (read_only is on)")
        if "interrupted" in low or "statement timeout" in low or "canceling statement" in low:
            return SqlError(self.name, "the statement ran longer than the timeout and was cancelled", code="TIMEOUT")
        return SqlError(self.name, redact(orig[:500], self._secrets))


class SqlApi:
    """`ctx.sql(name)`: `query(...)` returns rows as dicts, `execute(...)` the row count (when not read-only)."""

    def __init__(self, engine: SqlEngine, budget: Budget, record: Recorder | None) -> None:
        self._engine = engine
        self._budget = budget
        self._record = record
        self.name = engine.name

    def query(self, statement: str, /, **params: Any) -> list[dict[str, Any]]:
        rows = self._engine.run(statement, params, budget=self._budget, record=self._record, fetch=True)
        assert isinstance(rows, list)
        return rows

    def first(self, statement: str, /, **params: Any) -> dict[str, Any] | None:
        rows = self.query(statement, **params)
        return rows[0] if rows else None

    def execute(self, statement: str, /, **params: Any) -> int:
        count = self._engine.run(statement, params, budget=self._budget, record=self._record, fetch=False)
        assert isinstance(count, int)
        return count
