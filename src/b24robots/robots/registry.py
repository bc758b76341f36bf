"""One registry over two sources of robots, looked up by CODE.

Module robots come from a `Router`; stored robots from the register (any object with the
`StoredSource` shape; the store provides one). A stored active version wins over a module robot of
the same CODE: that is what adopting a module robot into the register means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from b24robots.robots.router import ModuleRobot, Router
from b24robots.robots.spec import RobotSpec
from b24robots.robots.triggers import TriggerSpec


@dataclass(frozen=True)
class StoredRobot:
    """The active version of a robot kept in the register."""

    spec: RobotSpec
    source: str
    version: int
    version_id: int
    content_hash: str
    limits: Mapping[str, Any] | None = None  # the robot's own sandbox limits, within the server's caps


class StoredSource(Protocol):
    def active(self, code: str) -> StoredRobot | None: ...

    def active_all(self) -> list[StoredRobot]: ...


@dataclass(frozen=True)
class Resolved:
    """What runs for a CODE: a module robot or a stored version."""

    spec: RobotSpec
    origin: Literal["module", "stored"]
    module: ModuleRobot | None = None
    stored: StoredRobot | None = None

    @property
    def version_id(self) -> int | None:
        return self.stored.version_id if self.stored else None


class Registry:
    def __init__(self, router: Router | None = None, stored: StoredSource | None = None) -> None:
        self.router = router or Router()
        self.stored = stored

    def resolve(self, code: str) -> Resolved | None:
        if self.stored is not None:
            found = self.stored.active(code)
            if found is not None:
                return Resolved(spec=found.spec, origin="stored", stored=found)
        module = self.router.get(code)
        if module is not None:
            return Resolved(spec=module.spec, origin="module", module=module)
        return None

    def all(self) -> list[Resolved]:
        """Every robot that should be registered on portals, stored versions first, by CODE."""
        out: dict[str, Resolved] = {}
        for module in self.router:
            out[module.spec.code] = Resolved(spec=module.spec, origin="module", module=module)
        if self.stored is not None:
            for s in self.stored.active_all():
                out[s.spec.code] = Resolved(spec=s.spec, origin="stored", stored=s)
        return [out[k] for k in sorted(out)]

    def triggers(self) -> list[TriggerSpec]:
        """Every trigger that should be registered on portals, by CODE."""
        return self.router.triggers()

    def trigger(self, code: str) -> TriggerSpec | None:
        """A declared trigger by CODE (compared case-insensitively, as the portal does)."""
        return next((t for t in self.triggers() if t.code.lower() == code.lower()), None)
