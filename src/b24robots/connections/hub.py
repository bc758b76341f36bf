"""The hub: long-lived engines per connection, and the per-run view robots use (`ctx.http(...)`).

A run sees only the connections its robot declares. Engines (HTTP pools, SQL engines, gates) are
shared by every run of a process and rebuilt when the stored connection changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx

from b24robots.connections.base import Budget, CallRecord
from b24robots.connections.config import ConnectionConfig, complete
from b24robots.connections.http import HttpApi, HttpEngine
from b24robots.connections.onec import OneCApi
from b24robots.connections.sql import SqlApi, SqlEngine
from b24robots.errors import ConnectionCallError, ConnectionNotAvailable

Engine = HttpEngine | SqlEngine
Observer = Callable[[CallRecord], None]
_ACCESSOR = {"http": "ctx.http", "1c": "ctx.onec", "sql": "ctx.sql"}


class ConnectionSource(Protocol):
    """Where connections live (the store): merged values per portal, and the journal of calls."""

    def resolve(self, name: str, member_id: str) -> ConnectionConfig | None: ...

    def record_calls(self, invocation_id: int | None, records: Sequence[CallRecord]) -> None: ...


class ConnectionHub:
    def __init__(
        self,
        source: ConnectionSource,
        *,
        transport: httpx.BaseTransport | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.source = source
        self.transport = transport
        self.observe = observe
        self._engines: dict[tuple[str, str], tuple[float, Engine]] = {}
        self._lock = threading.Lock()

    def engine(self, config: ConnectionConfig) -> Engine:
        key = (config.name, config.portal)
        with self._lock:
            found = self._engines.get(key)
            if found is not None and found[0] == config.stamp:
                return found[1]
            engine: Engine = SqlEngine(config) if config.kind == "sql" else HttpEngine(config, transport=self.transport)
            self._engines[key] = (config.stamp, engine)
        if found is not None:
            found[1].close()
        return engine

    def scope(
        self,
        *,
        robot: str,
        declared: Sequence[str],
        member_id: str,
        domain: str = "",
        deadline: float | None = None,
        invocation_id: int | None = None,
        attempt: int | None = None,
    ) -> RunConnections:
        return RunConnections(self, robot, tuple(declared), member_id, domain, Budget(deadline), invocation_id, attempt)

    def test(self, config: ConnectionConfig) -> str:
        """Check a connection works (base URL reachable, OData `$metadata`, `select 1`); say what was seen."""
        complete(config)
        engine = self.engine(config)
        budget = Budget(time.monotonic() + float(config.get("timeout")))
        if isinstance(engine, SqlEngine):
            rows = SqlApi(engine, budget, None).query("select 1 as ok")
            return f"select 1 answered {rows[0].get('ok') if rows else '?'}"
        http = HttpApi(engine, budget, None)
        if config.kind == "1c":
            text = OneCApi(http).metadata()
            sets = text.count("<EntitySet ")
            return f"$metadata answered with {sets} entity set(s)"
        response = http.get("", check=False)
        if response.status >= 500 or response.status in (401, 403, 407):
            raise ConnectionCallError(config.name, f"the base URL answered {response.status}", status=response.status)
        return f"the base URL answered {response.status}"

    def close(self) -> None:
        with self._lock:
            engines = [e for _, e in self._engines.values()]
            self._engines.clear()
        for engine in engines:
            engine.close()


class RunConnections:
    """What `ctx.http/onec/sql` reach during one run; collects the run's call records."""

    def __init__(
        self,
        hub: ConnectionHub,
        robot: str,
        declared: tuple[str, ...],
        member_id: str,
        domain: str,
        budget: Budget,
        invocation_id: int | None,
        attempt: int | None = None,
    ) -> None:
        self.hub = hub
        self.attempt = attempt
        self.robot = robot
        self.declared = declared
        self.member_id = member_id
        self.domain = domain
        self.budget = budget
        self.invocation_id = invocation_id
        self.records: list[CallRecord] = []
        self._flushed = 0
        self.last_error: ConnectionCallError | None = None
        self._apis: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _record(self, rec: CallRecord) -> None:
        self.note(rec)
        if self.hub.observe is not None:
            self.hub.observe(rec)

    def note(self, rec: CallRecord) -> None:
        """Keep a call of this run for the journal (REST calls come here too; only connection calls are
        also counted in the connection metrics, by `_record`)."""
        rec.attempt = self.attempt
        with self._lock:
            self.records.append(rec)

    def _config(self, name: str, kind: str) -> ConnectionConfig:
        if not isinstance(name, str) or name not in self.declared:
            listed = ", ".join(self.declared) or "none"
            raise ConnectionNotAvailable(
                str(name)[:64],
                f"robot {self.robot!r} does not declare this connection (it declares: {listed}); "
                "add it to the robot's connections",
            )
        config = self.hub.source.resolve(name, self.member_id)
        if config is None:
            raise ConnectionNotAvailable(
                name,
                "no such connection; add it on the Connections page or with "
                f"`b24robots connections add {name} --kind {kind} ...`",
            )
        if config.kind != kind:
            raise ConnectionNotAvailable(
                name, f"is a {config.kind} connection; use {_ACCESSOR[config.kind]}({name!r}), not {_ACCESSOR[kind]}"
            )
        return complete(config, self.domain or self.member_id)

    def _api(self, name: str, kind: str) -> Any:
        found = self._apis.get(name)
        if found is not None and found[0] == kind:
            return found[1]
        config = self._config(name, kind)
        engine = self.hub.engine(config)
        api: Any
        if isinstance(engine, SqlEngine):
            api = SqlApi(engine, self.budget, self._record)
        else:
            http = HttpApi(engine, self.budget, self._record)
            api = OneCApi(http) if kind == "1c" else http
        self._apis[name] = (kind, api)
        return api

    def http(self, name: str) -> HttpApi:
        api: HttpApi = self._api(name, "http")
        return api

    def onec(self, name: str) -> OneCApi:
        api: OneCApi = self._api(name, "1c")
        return api

    def sql(self, name: str) -> SqlApi:
        api: SqlApi = self._api(name, "sql")
        return api

    def flush(self) -> None:
        """Write the run's call records not yet written to the journal; `records` keeps them all."""
        with self._lock:
            records = self.records[self._flushed :]
            self._flushed = len(self.records)
        if records:
            self.hub.source.record_calls(self.invocation_id, records)
