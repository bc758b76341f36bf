"""Triggers in the register: CRM automation triggers declared from the UI or the CLI, not in Python.

Versioned like stored robots: every change appends a version holding the trigger's document
(`{kind: trigger, code, name}`, the format `b24robots robots export|import` writes and reads) with a
content hash; one version is active; removing a trigger keeps its rows as history (state "deleted")
and saving the CODE again continues the numbering. Every add, change and removal is written to the
audit log in the same transaction (trigger.add / trigger.change / trigger.remove).

CODEs are unique case-insensitively, as the portal compares them (protocol §6). Whether a CODE is
also declared in Python is the caller's check (the register does not know the robots module).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from b24robots.errors import DeclarationError, NotFound, StoreError
from b24robots.robots.triggers import TriggerSpec
from b24robots.store.audit import record_in
from b24robots.store.cache import TtlCache
from b24robots.store.db import Database
from b24robots.store.models import TriggerRow, TriggerVersionRow
from b24robots.store.versioned import ACTIVE, DELETED, Versioned, content_hash, require_author, unchanged

_TRIGGERS = Versioned(TriggerRow, TriggerVersionRow, TriggerVersionRow.trigger_id)


def trigger_document(spec: TriggerSpec) -> dict[str, Any]:
    """The document of a trigger: what a version holds and what export writes."""
    return {"kind": "trigger", **spec.to_document()}


def trigger_from_document(doc: Any) -> TriggerSpec:
    """Read a trigger document (`kind: trigger` optional here); DeclarationError naming the fix."""
    if not isinstance(doc, dict):
        raise DeclarationError("a trigger document must be a mapping {kind: trigger, code: ..., name: ...}")
    unknown = sorted(set(doc) - {"kind", "code", "name"})
    if unknown:
        raise DeclarationError(f"trigger document: unknown field(s) {', '.join(map(str, unknown))}; use code and name")
    if doc.get("kind", "trigger") != "trigger":
        raise DeclarationError(f"kind {doc.get('kind')!r} is not a trigger")
    return TriggerSpec.from_document(doc)


@dataclass(frozen=True)
class TriggerVersion:
    number: int
    author: str
    comment: str
    created_at: float
    content_hash: str
    active: bool
    spec: TriggerSpec


@dataclass(frozen=True)
class TriggerInfo:
    code: str
    spec: TriggerSpec  # the active version's
    active_version: int
    versions: int
    state: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Saved:
    version: TriggerVersion
    action: str  # "add" (new or saved again after removal) | "change" | "same" (nothing appended)


class TriggerRegister:
    """Register triggers; `active()` is what sync registers beside the module's triggers."""

    def __init__(self, db: Database, *, cache_seconds: float = 0.0) -> None:
        self.db = db
        # fires ask for the declared triggers on every call: kept like the register's robots (store/cache.py)
        self._active: TtlCache[str, list[TriggerSpec]] = TtlCache(db, cache_seconds)

    # --- writes ------------------------------------------------------------------------------
    def save(
        self,
        spec: TriggerSpec,
        *,
        author: str,
        actor: str,
        comment: str = "",
        address: str = "",
        must_exist: bool | None = None,
    ) -> Saved:
        """Add a version (creating the trigger on first save); an identical active version is not duplicated.

        `must_exist` True refuses an unknown CODE (set), False an existing one (add); None takes both (import).
        """
        require_author(author)
        document = trigger_document(spec)
        digest = content_hash(document)
        now = time.time()
        with self.db.changing_cached() as s:
            row = s.scalar(select(TriggerRow).where(TriggerRow.code_key == spec.code.lower()))
            live = row is not None and row.state == ACTIVE
            if must_exist is True and not live:
                raise NotFound(f"no register trigger {spec.code!r}; add it with `b24robots triggers add {spec.code}`")
            if must_exist is False and live:
                assert row is not None
                raise DeclarationError(
                    f"trigger {row.code!r} is in the register already; "
                    f"change it with `b24robots triggers set {row.code}`"
                )
            if row is not None and (same := unchanged(row, _TRIGGERS.active(s, row), digest)) is not None:
                return Saved(self._info(same, row), "same")
            action = "change" if live else "add"
            if row is None:
                row = TriggerRow(
                    code=spec.code,
                    code_key=spec.code.lower(),
                    active_version=0,
                    state=ACTIVE,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                s.flush()
            version = TriggerVersionRow(
                document=document, content_hash=digest, author=author, comment=comment, created_at=now
            )
            _TRIGGERS.append(s, row, version)
            row.code, row.state, row.updated_at = spec.code, ACTIVE, now
            record_in(
                s,
                f"trigger.{action}",
                actor=actor,
                target=spec.code,
                address=address,
                details={"version": version.number, "name": document["name"]},
            )
            s.flush()
            return Saved(self._info(version, row), action)

    def remove(self, code: str, *, actor: str, address: str = "") -> TriggerInfo:
        """Take a trigger out of the register (sync then deletes it from the portals that have it from us).
        Its versions stay as history. NotFound when unknown or removed already."""
        with self.db.changing_cached() as s:
            row = self._row(s, code)
            row.state, row.updated_at = DELETED, time.time()
            record_in(
                s,
                "trigger.remove",
                actor=actor,
                target=row.code,
                address=address,
                details={"version": row.active_version},
            )
            s.flush()
            return self._trigger_info(s, row)

    # --- reads -------------------------------------------------------------------------------
    def active(self) -> list[TriggerSpec]:
        """The active version of every trigger not removed, by CODE."""
        found, cached = self._active.get("")
        if found and cached is not None:
            return list(cached)
        generation = self._active.generation()
        with self.db.read() as s:
            rows = s.scalars(_TRIGGERS.live()).all()
            specs = sorted((_spec(r) for r in rows), key=lambda t: t.code)
        self._active.put("", list(specs), generation)
        return specs

    def removed(self) -> set[str]:
        """CODEs (lowercased) removed from the register on purpose: sync deletes them where we registered them."""
        with self.db.read() as s:
            return {k for k in s.scalars(select(TriggerRow.code_key).where(TriggerRow.state == DELETED))}

    def triggers(self, *, deleted: bool = False) -> list[TriggerInfo]:
        with self.db.read() as s:
            query = select(TriggerRow).order_by(TriggerRow.code_key)
            if not deleted:
                query = query.where(TriggerRow.state == ACTIVE)
            return [self._trigger_info(s, r) for r in s.scalars(query).all()]

    def get(self, code: str) -> TriggerInfo:
        with self.db.read() as s:
            return self._trigger_info(s, self._row(s, code))

    def exists(self, code: str) -> bool:
        with self.db.read() as s:
            key = code.lower()
            return (
                s.scalar(select(TriggerRow.id).where(TriggerRow.code_key == key, TriggerRow.state == ACTIVE))
                is not None
            )

    def versions(self, code: str) -> list[TriggerVersion]:
        """Every version, oldest first; a removed trigger's too."""
        with self.db.read() as s:
            row = self._row(s, code, deleted=True)
            return [self._info(r, row) for r in _TRIGGERS.history(s, row.id)]

    # --- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _row(s: Session, code: str, *, deleted: bool = False) -> TriggerRow:
        row = _TRIGGERS.find(s, TriggerRow.code_key == code.lower(), deleted=deleted)
        if row is None:
            raise NotFound(f"no register trigger {code!r}; see `b24robots triggers list`")
        return row

    @staticmethod
    def _trigger_info(s: Session, row: TriggerRow) -> TriggerInfo:
        count = _TRIGGERS.count(s, row.id)
        version = _TRIGGERS.active(s, row)
        if version is None:
            raise StoreError(f"register trigger {row.code!r} has no version {row.active_version}")
        return TriggerInfo(
            row.code, _spec(version), row.active_version, count, row.state, row.created_at, row.updated_at
        )

    @staticmethod
    def _info(version: TriggerVersionRow, row: TriggerRow) -> TriggerVersion:
        return TriggerVersion(
            number=version.number,
            author=version.author,
            comment=version.comment,
            created_at=version.created_at,
            content_hash=version.content_hash,
            active=version.number == row.active_version,
            spec=_spec(version),
        )


def _spec(version: TriggerVersionRow) -> TriggerSpec:
    try:
        return trigger_from_document(dict(version.document))
    except DeclarationError as exc:  # a document we wrote ourselves should always load
        raise StoreError(f"trigger version {version.id} is not a valid trigger: {exc}") from None
