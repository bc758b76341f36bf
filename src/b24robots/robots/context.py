"""What a running robot knows about its invocation, and what it may do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from b24robots.errors import ConnectionNotAvailable
from b24robots.fields import as_int
from b24robots.robots.dates import UNKNOWN, Culture
from b24robots.robots.documents import Document
from b24robots.robots.triggers import Entity


class PortalRest(Protocol):
    """The REST client bound to the invocation's portal (tokens, rate limit and retries are its job)."""

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any: ...

    async def batch(self, commands: Any, halt: bool = False) -> Any: ...


class Outbound(Protocol):
    """Fires and workflow starts for the invocation's portal, journaled (the sender delivers them).

    `key` deduplicates: the same key is fired once. Both return the journal entry id.
    """

    async def fire_trigger(self, code: str, entity: Entity, key: str) -> int: ...

    async def start_workflow(
        self, template_id: int, entity: Entity, parameters: Mapping[str, Any] | None, key: str
    ) -> int: ...


class HttpCalls(Protocol):
    """`ctx.http(name)`: requests to one connection's origin; paths are relative to its base URL.

    Each method returns a response with `.status`, `.headers`, `.content`, `.text`, `.json()`;
    a 4xx/5xx answer raises RemoteError unless `check=False`.
    """

    def request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def get(self, path: str, **kwargs: Any) -> Any: ...

    def post(self, path: str, **kwargs: Any) -> Any: ...

    def put(self, path: str, **kwargs: Any) -> Any: ...

    def patch(self, path: str, **kwargs: Any) -> Any: ...

    def delete(self, path: str, **kwargs: Any) -> Any: ...


class OneCCalls(Protocol):
    """`ctx.onec(name)`: objects of a 1C infobase through its standard OData interface."""

    def list(
        self,
        entity: str,
        *,
        filter: str | Mapping[str, Any] | None = None,
        select: str | Sequence[str] | None = None,
        top: int | None = None,
        skip: int | None = None,
        orderby: str | None = None,
        expand: str | None = None,
    ) -> list[dict[str, Any]]: ...

    def first(self, entity: str, **kwargs: Any) -> dict[str, Any] | None: ...

    def get(self, entity: str, key: str | Mapping[str, Any]) -> dict[str, Any]: ...

    def create(self, entity: str, fields: Mapping[str, Any]) -> dict[str, Any]: ...

    def update(self, entity: str, key: str | Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, entity: str, key: str | Mapping[str, Any]) -> None: ...

    def post_document(self, document: str, key: str, *, operational: bool = False) -> None: ...


class SqlCalls(Protocol):
    """`ctx.sql(name)`: parameterised statements (`:name` placeholders, values as keyword arguments)."""

    def query(self, statement: str, /, **params: Any) -> list[dict[str, Any]]: ...

    def first(self, statement: str, /, **params: Any) -> dict[str, Any] | None: ...

    def execute(self, statement: str, /, **params: Any) -> int: ...


class Connections(Protocol):
    """The connections a run may use: only those its robot declares."""

    def http(self, name: str) -> HttpCalls: ...

    def onec(self, name: str) -> OneCCalls: ...

    def sql(self, name: str) -> SqlCalls: ...


@dataclass
class RobotContext:
    """The context handed to a robot handler.

    `log(message)` is cheap and synchronous: lines are collected and written to the workflow log
    (`bizproc.activity.log`) by the worker; they are also kept in the journal.
    """

    portal: str
    member_id: str
    code: str
    workflow_id: str
    document_id: Sequence[str]
    document_type: Sequence[str]
    event_token: str
    user_id: int | None = None
    invocation_id: int | None = None
    attempt: int = 1
    rest: PortalRest | None = None
    # the same portal as the robot's run-as user (the token that came with this call, memory only);
    # None when the call carried no user or another process / an earlier start of this one took it
    rest_as_caller: PortalRest | None = None
    logs: list[str] = field(default_factory=list)
    outbound: Outbound | None = None
    fires: int = 0
    connections: Connections | None = None
    # how the portal writes dates (the installation's culture): inputs were parsed with it
    culture: Culture = UNKNOWN

    def _connections(self) -> Connections:
        if self.connections is None:
            raise ConnectionNotAvailable("", "connections are not available in this run")
        return self.connections

    def http(self, name: str) -> HttpCalls:
        """The http connection `name` (declared by the robot). Calls block: in an async handler wrap them
        in `asyncio.to_thread`."""
        return self._connections().http(name)

    def onec(self, name: str) -> OneCCalls:
        """The 1c connection `name` (declared by the robot)."""
        return self._connections().onec(name)

    def sql(self, name: str) -> SqlCalls:
        """The sql connection `name` (declared by the robot)."""
        return self._connections().sql(name)

    def log(self, message: str) -> None:
        text = str(message).strip()
        if text:
            self.logs.append(text)

    def _entity(self, entity: Entity | str | None) -> Entity:
        if entity is None:
            return Entity.from_document_id(list(self.document_id))
        return entity if isinstance(entity, Entity) else Entity.parse(entity)

    def _next_key(self) -> str:
        if self.outbound is None or self.invocation_id is None:
            raise RuntimeError("firing triggers is not available here (a test run has no portal to fire on)")
        # the n-th fire of this invocation: a retried run fires the same keys, so nothing fires twice
        self.fires += 1
        return f"robot:{self.invocation_id}:{self.fires}"

    async def fire_trigger(self, code: str, entity: Entity | str | None = None) -> int:
        """Fire CRM automation trigger `code` for `entity` (default: this robot's document, e.g. the deal).

        The fire is journaled and delivered by the sender after this run; returns the journal entry id.
        """
        key = self._next_key()
        assert self.outbound is not None
        return await self.outbound.fire_trigger(code, self._entity(entity), key)

    async def start_workflow(
        self, template_id: int, entity: Entity | str | None = None, parameters: Mapping[str, Any] | None = None
    ) -> int:
        """Start business-process template `template_id` on `entity` (default: this robot's document)."""
        key = self._next_key()
        assert self.outbound is not None
        return await self.outbound.start_workflow(template_id, self._entity(entity), parameters, key)

    @property
    def document(self) -> Document:
        """The document this robot runs on, parsed: `ctx.document.entity_type_id` and `.item_id` for
        `crm.item.get/update` (deals, smart-process items ...), `.item_id` the task id for a task."""
        return Document.parse(list(self.document_id))

    @property
    def entity_id(self) -> int | None:
        """The numeric id at the end of `document_id[2]` (`DEAL_1188` -> 1188), if there is one."""
        if len(self.document_id) < 3:
            return None
        tail = self.document_id[2].rsplit("_", 1)[-1]
        return as_int(tail)
