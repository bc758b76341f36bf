"""What a running robot knows about its invocation, and what it may do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class PortalRest(Protocol):
    """The REST client bound to the invocation's portal (tokens, rate limit and retries are its job)."""

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any: ...

    async def batch(self, commands: Any, halt: bool = False) -> Any: ...


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
    logs: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        text = str(message).strip()
        if text:
            self.logs.append(text)

    @property
    def entity_id(self) -> int | None:
        """The numeric id at the end of `document_id[2]` (`DEAL_1188` -> 1188), if there is one."""
        if len(self.document_id) < 3:
            return None
        tail = self.document_id[2].rsplit("_", 1)[-1]
        return int(tail) if tail.isdigit() else None
