"""The register: stored robots with append-only, content-hashed code versions."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from b24robots.errors import ConfigError, DeclarationError, NotFound, SourceRejected, StoreError
from b24robots.robots.registry import StoredRobot
from b24robots.robots.spec import RobotSpec
from b24robots.sandbox import SandboxLimits, check_source
from b24robots.store import versioned
from b24robots.store.audit import record_in
from b24robots.store.cache import TtlCache
from b24robots.store.db import Database
from b24robots.store.models import RobotRow, RobotVersionRow
from b24robots.store.versioned import Versioned, content_hash, require_author, unchanged

_ROBOTS = Versioned(RobotRow, RobotVersionRow, RobotVersionRow.robot_id)


@dataclass(frozen=True)
class VersionInfo:
    id: int
    number: int
    author: str
    comment: str
    created_at: float
    content_hash: str
    active: bool
    document: dict[str, Any]
    source: str


# a robot's states: a versioned document's two, and disabled (kept, not registered on portals)
ACTIVE, DISABLED, DELETED = versioned.ACTIVE, "disabled", versioned.DELETED
STATES = (ACTIVE, DISABLED, DELETED)


@dataclass(frozen=True)
class RobotInfo:
    code: str
    kind: str
    origin: str
    active_version: int
    versions: int
    created_at: float
    updated_at: float
    state: str = ACTIVE


class Register:
    """Stored robots. Implements the registry's `StoredSource`."""

    def __init__(self, db: Database, *, cache_seconds: float = 0.0) -> None:
        self.db = db
        # what every robot call asks: the active version of a CODE (None too: a module robot's CODE) and
        # the retired states; forgotten on every register change (store/cache.py)
        self._active: TtlCache[str, StoredRobot | None] = TtlCache(db, cache_seconds)
        self._states: TtlCache[str, dict[str, str]] = TtlCache(db, cache_seconds)

    # --- writes ------------------------------------------------------------------------------
    def save(
        self,
        spec: RobotSpec,
        source: str,
        *,
        author: str,
        comment: str = "",
        origin: str = "stored",
        activate: bool = True,
        limits: Mapping[str, Any] | None = None,
    ) -> VersionInfo:
        """Add a version (creating the robot on first save). An identical active version is not duplicated.

        `limits` are the robot's own sandbox limits (a subset of SandboxLimits' fields; the server's
        caps still apply). None keeps the limits of the active version.
        """
        require_author(author)
        if limits is not None:
            limits = check_limits(limits, spec.code)
        problems = check_source(source)
        if problems:
            listed = "; ".join(str(p) for p in problems)
            raise SourceRejected(f"the code of {spec.code!r} cannot be saved: {listed}", problems)
        now = time.time()
        with self.db.changing_cached() as s:
            robot = s.scalar(select(RobotRow).where(RobotRow.code == spec.code))
            active = _ROBOTS.active(s, robot) if robot is not None else None
            if limits is None and active is not None:
                limits = active.document.get("limits")
            document = spec.to_document()
            if limits:
                document["limits"] = dict(limits)
            digest = content_hash({"document": document, "source": source})
            if robot is None:
                robot = RobotRow(
                    code=spec.code,
                    kind=spec.kind,
                    origin=origin,
                    active_version=0,
                    created_at=now,
                    updated_at=now,
                )
                s.add(robot)
                s.flush()
            elif (same := unchanged(robot, active, digest)) is not None:
                return self._info(same, robot)
            elif robot.state == DELETED:
                robot.state = ACTIVE  # the code is reused: numbering continues after the deleted history
            row = RobotVersionRow(
                document=document, source=source, content_hash=digest, author=author, comment=comment, created_at=now
            )
            _ROBOTS.append(s, robot, row, activate=activate)
            robot.kind = spec.kind
            robot.updated_at = now
            s.flush()
            return self._info(row, robot)

    def activate(self, code: str, number: int) -> VersionInfo:
        """Make version `number` the one that runs (a rollback when it is older)."""
        with self.db.changing_cached() as s:
            robot = self._robot(s, code)
            row = _ROBOTS.version(s, robot.id, number)
            if row is None:
                raise NotFound(f"robot {code!r} has no version {number}; see `b24robots robots versions {code}`")
            robot.active_version = number
            robot.kind = str(row.document.get("kind", robot.kind))
            robot.updated_at = time.time()
            return self._info(row, robot)

    def set_state(self, code: str, state: str, *, actor: str, address: str = "") -> RobotInfo:
        """Disable, enable (ACTIVE) or delete a stored robot, audited in the same transaction as
        robot.disable / robot.enable / robot.delete. Rows are never removed: a deleted robot's versions
        stay as history and saving the code again starts it afresh. NotFound when unknown or deleted."""
        if state not in STATES:
            raise StoreError(f"unknown robot state {state!r}; use one of: {', '.join(STATES)}")
        with self.db.changing_cached() as s:
            robot = self._robot(s, code)
            before = robot.state
            robot.state, robot.updated_at = state, time.time()
            action = {ACTIVE: "robot.enable", DISABLED: "robot.disable", DELETED: "robot.delete"}[state]
            details = {"from": before, "version": robot.active_version}
            record_in(s, action, actor=actor, target=code, address=address, details=details)
            s.flush()
            return self._robot_info(s, robot)

    def state(self, code: str) -> str | None:
        """The stored robot's state, or None when the register never had the code."""
        with self.db.read() as s:
            return s.scalar(select(RobotRow.state).where(RobotRow.code == code))

    def states(self) -> dict[str, str]:
        """code -> state of every stored robot that is not active (disabled or deleted)."""
        found, cached = self._states.get("")
        if found and cached is not None:
            return dict(cached)
        generation = self._states.generation()
        with self.db.read() as s:
            rows = s.execute(select(RobotRow.code, RobotRow.state).where(RobotRow.state != ACTIVE)).all()
        states = {code: state for code, state in rows}
        self._states.put("", dict(states), generation)
        return states

    # --- reads -------------------------------------------------------------------------------
    def robots(self, *, deleted: bool = False) -> list[RobotInfo]:
        """Stored robots by code; deleted ones only when `deleted`."""
        with self.db.read() as s:
            counts = _ROBOTS.counts(s)
            query = select(RobotRow).order_by(RobotRow.code)
            if not deleted:
                query = query.where(RobotRow.state != DELETED)
            return [self._robot_info(s, r, counts.get(r.id, 0)) for r in s.scalars(query).all()]

    def versions(self, code: str) -> list[VersionInfo]:
        """Every version, oldest first; a deleted robot's too (they are its history)."""
        with self.db.read() as s:
            robot = self._robot(s, code, deleted=True)
            return [self._info(r, robot) for r in _ROBOTS.history(s, robot.id)]

    def version(self, code: str, number: int | None = None) -> VersionInfo:
        """A version by number, or the active one."""
        with self.db.read() as s:
            robot = self._robot(s, code)
            row = _ROBOTS.version(s, robot.id, number if number is not None else robot.active_version)
            if row is None:
                raise NotFound(f"robot {code!r} has no version {number}")
            return self._info(row, robot)

    def exists(self, code: str) -> bool:
        """A stored robot with this code that is not deleted (a deleted code can be created again)."""
        with self.db.read() as s:
            return s.scalar(select(RobotRow.id).where(RobotRow.code == code, RobotRow.state != DELETED)) is not None

    def active(self, code: str) -> StoredRobot | None:
        """The version that runs, for an active robot only."""
        found, cached = self._active.get(code)
        if found:
            return cached
        generation = self._active.generation()
        with self.db.read() as s:
            row = s.scalar(_ROBOTS.live(RobotRow.code == code))
            stored = _stored(row) if row is not None else None
        self._active.put(code, stored, generation)
        return stored

    def active_all(self) -> list[StoredRobot]:
        with self.db.read() as s:
            return [_stored(r) for r in s.scalars(_ROBOTS.live()).all()]

    # --- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _robot(s: Session, code: str, *, deleted: bool = False) -> RobotRow:
        robot = _ROBOTS.find(s, RobotRow.code == code, deleted=deleted)
        if robot is None:
            raise NotFound(f"no stored robot with code {code!r}; see `b24robots robots list`")
        return robot

    @staticmethod
    def _robot_info(s: Session, r: RobotRow, versions: int | None = None) -> RobotInfo:
        if versions is None:
            versions = _ROBOTS.count(s, r.id)
        return RobotInfo(r.code, r.kind, r.origin, r.active_version, versions, r.created_at, r.updated_at, r.state)

    @staticmethod
    def _info(row: RobotVersionRow, robot: RobotRow) -> VersionInfo:
        return VersionInfo(
            id=row.id,
            number=row.number,
            author=row.author,
            comment=row.comment,
            created_at=row.created_at,
            content_hash=row.content_hash,
            active=row.number == robot.active_version,
            document=dict(row.document),
            source=row.source,
        )


def _stored(row: RobotVersionRow) -> StoredRobot:
    try:
        spec = RobotSpec.from_document(row.document)
    except DeclarationError as exc:  # a document we wrote ourselves should always load
        raise StoreError(f"stored version {row.id} is not a valid robot: {exc}") from None
    limits = row.document.get("limits")
    return StoredRobot(
        spec=spec,
        source=row.source,
        version=row.number,
        version_id=row.id,
        content_hash=row.content_hash,
        limits=dict(limits) if isinstance(limits, Mapping) else None,
    )


def check_limits(limits: object, code: str) -> dict[str, Any]:
    """Validate a robot's sandbox limits document; DeclarationError naming the fix."""
    if not isinstance(limits, Mapping):
        raise DeclarationError(f"robot {code!r}: limits must be a mapping such as {{cpu_seconds: 2, memory_mb: 128}}")
    known = {f.name for f in fields(SandboxLimits)}
    unknown = sorted(set(limits) - known)
    if unknown:
        raise DeclarationError(
            f"robot {code!r}: unknown limit(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        SandboxLimits(**limits)
    except (ConfigError, TypeError) as exc:
        raise DeclarationError(f"robot {code!r}: {exc}") from None
    return dict(limits)
