"""One registry over two sources of robots, looked up by CODE.

Module robots come from a `Router`; stored robots from the register (any object with the
`StoredSource` shape; the store provides one). A stored active version wins over a module robot of
the same CODE: that is what adopting a module robot into the register means. A disabled stored robot
hides a module robot of the same CODE too (disabling an adopted robot must not run the module code);
a deleted one no longer does.
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

    def states(self) -> dict[str, str]:
        """code -> "disabled" | "deleted" for stored robots that are not active."""
        ...


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
        """What runs for `code`; None when nothing is declared or the robot is disabled (see `retired`)."""
        if self.stored is not None:
            found = self.stored.active(code)
            if found is not None:
                return Resolved(spec=found.spec, origin="stored", stored=found)
            if code in self.router and self.retired().get(code) == "disabled":
                return None
        module = self.router.get(code)
        if module is not None:
            return Resolved(spec=module.spec, origin="module", module=module)
        return None

    def all(self) -> list[Resolved]:
        """Every robot that should be registered on portals, stored versions first, by CODE."""
        out: dict[str, Resolved] = {}
        disabled = {c for c, state in self.retired().items() if state == "disabled"}
        for module in self.router:
            if module.spec.code not in disabled:
                out[module.spec.code] = Resolved(spec=module.spec, origin="module", module=module)
        if self.stored is not None:
            for s in self.stored.active_all():
                out[s.spec.code] = Resolved(spec=s.spec, origin="stored", stored=s)
        return [out[k] for k in sorted(out)]

    def retired(self) -> dict[str, str]:
        """Stored robots taken out on purpose: code -> "disabled" | "deleted"."""
        return self.stored.states() if self.stored is not None else {}

    def unavailable(self, code: str) -> tuple[str, str]:
        """For a call `resolve` found nothing for: (journal error, the log line the workflow shows)."""
        state = self.retired().get(code)
        if state == "disabled":
            return (
                f"robot {code!r} is disabled on this server",
                f"b24robots: robot {code} is disabled, so it did nothing; "
                "enable it in b24robots or remove it from this workflow",
            )
        if state == "deleted":
            return (
                f"robot {code!r} was deleted on this server",
                f"b24robots: robot {code} was deleted, so it did nothing; remove it from this workflow",
            )
        return (
            f"robot {code!r} is not declared on this server",
            f"b24robots: robot {code} is not available on the server",
        )

    @property
    def modules_loaded(self) -> bool:
        """Whether a robots module (B24R_APP / --app) declared anything; without one, sync cannot tell a
        module robot that was removed on purpose from one that is merely not loaded."""
        return len(self.router) > 0 or bool(self.router.triggers())

    def triggers(self) -> list[TriggerSpec]:
        """Every trigger that should be registered on portals, by CODE."""
        return self.router.triggers()

    def trigger(self, code: str) -> TriggerSpec | None:
        """A declared trigger by CODE (compared case-insensitively, as the portal does)."""
        return next((t for t in self.triggers() if t.code.lower() == code.lower()), None)
