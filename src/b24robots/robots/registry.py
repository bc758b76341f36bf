"""One registry over two sources of robots, looked up by CODE.

Module robots come from a `Router`; stored robots from the register (any object with the
`StoredSource` shape; the store provides one). A stored active version wins over a module robot of
the same CODE: that is what adopting a module robot into the register means. A disabled stored robot
hides a module robot of the same CODE too (disabling an adopted robot must not run the module code);
a deleted one no longer does.

Triggers come from the same two places: `router.trigger(...)` in the module and the register's
triggers (any object with the `TriggerSource` shape). A CODE declared in both is a clash, not an
override: it is refused when saved in the register, and when a module declares it later, sync leaves
that trigger alone and says so (`trigger_clashes`, `clash_message`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from b24robots.errors import DeclarationError
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


class TriggerSource(Protocol):
    def active(self) -> list[TriggerSpec]:
        """The register's triggers, by CODE."""
        ...

    def removed(self) -> set[str]:
        """Lowercased CODEs removed from the register on purpose."""
        ...


def clash_message(code: str) -> str:
    """What to say about a trigger CODE declared both in Python and in the register."""
    return (
        f"trigger {code!r} is declared both in the robots module (router.trigger) and in the register; "
        f"keep one: remove it with `b24robots triggers remove {code}` "
        f"or take router.trigger({code!r}) out of the module"
    )


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
    def __init__(
        self,
        router: Router | None = None,
        stored: StoredSource | None = None,
        stored_triggers: TriggerSource | None = None,
    ) -> None:
        self.router = router if router is not None else Router()  # a Router of triggers only is empty (len 0)
        self.stored = stored
        self.stored_triggers = stored_triggers

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
        """Every declared trigger, module and register, by CODE (a clashing CODE once, the module's)."""
        module = self.router.triggers()
        taken = {t.code.lower() for t in module}
        stored = [t for t in self.register_triggers() if t.code.lower() not in taken]
        return sorted([*module, *stored], key=lambda t: t.code.lower())

    def register_triggers(self) -> list[TriggerSpec]:
        return self.stored_triggers.active() if self.stored_triggers is not None else []

    def trigger_source(self, code: str) -> str | None:
        """ "module", "register", "both" (a clash) or None for a trigger CODE."""
        key = code.lower()
        module = any(t.code.lower() == key for t in self.router.triggers())
        stored = any(t.code.lower() == key for t in self.register_triggers())
        return "both" if module and stored else "module" if module else "register" if stored else None

    def check_register_trigger(self, code: str) -> None:
        """Refuse saving `code` in the register when the robots module declares it (DeclarationError)."""
        declared = next((t.code for t in self.router.triggers() if t.code.lower() == code.lower()), None)
        if declared is not None:
            raise DeclarationError(
                f"trigger {declared!r} is declared in the robots module (router.trigger) already, so it cannot be "
                f"added to the register; use another CODE, or take router.trigger({declared!r}) out of the module"
            )

    def trigger_clashes(self) -> set[str]:
        """Lowercased CODEs declared both in the module and in the register."""
        module = {t.code.lower() for t in self.router.triggers()}
        return module & {t.code.lower() for t in self.register_triggers()}

    def removed_triggers(self) -> set[str]:
        """Lowercased CODEs removed from the register and declared nowhere now: sync deletes them."""
        if self.stored_triggers is None:
            return set()
        declared = {t.code.lower() for t in self.triggers()}
        return self.stored_triggers.removed() - declared

    def trigger(self, code: str) -> TriggerSpec | None:
        """A declared trigger by CODE (compared case-insensitively, as the portal does)."""
        return next((t for t in self.triggers() if t.code.lower() == code.lower()), None)
