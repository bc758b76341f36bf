"""The audit log: who did what to which object, when and from where.

Entries are append-only and name their actor and target as text, so they outlive the user or the
object they are about. Any store may write an entry inside its own transaction with `record_in`, so
the change and its entry commit together; `Audit.record` writes one on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from b24robots.store.db import Database
from b24robots.store.user_models import AuditRow

# the largest id an Integer column holds on every backend (PostgreSQL's integer is 32-bit)
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    address: str
    details: dict[str, Any]


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def record_in(
    session: Session,
    action: str,
    *,
    actor: str,
    target: str = "",
    address: str = "",
    details: dict[str, Any] | None = None,
    now: float | None = None,
) -> None:
    """Add an entry to the caller's transaction. Never pass secrets in `details`: the page shows them."""
    session.add(
        AuditRow(
            at=time.time() if now is None else now,
            actor=_clip(actor or "?", 128),
            action=_clip(action, 64),
            target=_clip(target, 255),
            address=_clip(address, 64),
            details=dict(details or {}),
        )
    )


class Audit:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        action: str,
        *,
        actor: str,
        target: str = "",
        address: str = "",
        details: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> None:
        """Write one entry in a transaction of its own."""
        with self.db.write() as s:
            record_in(s, action, actor=actor, target=target, address=address, details=details, now=now)

    def recent(
        self,
        *,
        limit: int = 100,
        before_id: int | None = None,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
    ) -> list[AuditEntry]:
        """Newest first. `action` matches a whole action or a prefix ending in a dot ("robot.")."""
        stmt = select(AuditRow).order_by(AuditRow.id.desc()).limit(max(1, min(limit, 1000)))
        if before_id is not None:
            stmt = stmt.where(AuditRow.id < min(before_id, MAX_ID))
        if action:
            prefix = action.endswith(".")
            stmt = stmt.where(
                AuditRow.action.startswith(action, autoescape=True) if prefix else AuditRow.action == action
            )
        if actor:
            stmt = stmt.where(AuditRow.actor == actor)
        if target:
            stmt = stmt.where(AuditRow.target == target)
        with self.db.read() as s:
            return [
                AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.address, dict(r.details or {}))
                for r in s.scalars(stmt)
            ]
