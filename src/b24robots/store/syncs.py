"""The journal of syncs: per portal, what each sync planned, made and skipped (newest first).

Every sync records one entry (a dry run too, marked as one); the oldest entries of a portal beyond
KEEP_PER_PORTAL are deleted as new ones come, so the table stays small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from b24robots.store.db import Database
from b24robots.store.models import InstallationRow, SyncRow

KEEP_PER_PORTAL = 100
ORIGINS = ("install", "cli", "ui", "robot", "api")


@dataclass(frozen=True)
class SyncEntry:
    id: int
    domain: str
    started_at: float
    finished_at: float
    origin: str
    dry_run: bool
    error: str
    changes: list[dict[str, Any]]
    warnings: list[str]

    def count(self, action: str, *, done: bool | None = None) -> int:
        """How many changes had `action` (and, with `done`, were made or not)."""
        return sum(1 for c in self.changes if c.get("action") == action and (done is None or c.get("done") is done))

    @property
    def summary(self) -> str:
        """`2 added, 1 updated, 0 deleted, 1 skipped, 3 kept` (a dry run counts what it would do)."""
        made = None if self.dry_run else True
        parts = [
            f"{self.count('add', done=made)} added",
            f"{self.count('update', done=made)} updated",
            f"{self.count('delete', done=made)} deleted",
        ]
        for action, word in (("skip", "skipped"), ("keep", "kept")):
            if n := self.count(action):
                parts.append(f"{n} {word}")
        return ", ".join(parts)


class SyncLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        installation_id: int,
        *,
        origin: str,
        started_at: float,
        dry_run: bool,
        error: str,
        changes: list[dict[str, Any]],
        warnings: list[str],
        now: float | None = None,
    ) -> int:
        now = time.time() if now is None else now
        with self.db.write() as s:
            row = SyncRow(
                installation_id=installation_id,
                started_at=started_at,
                finished_at=now,
                origin=origin,
                dry_run=dry_run,
                error=error,
                changes=changes,
                warnings=warnings,
            )
            s.add(row)
            s.flush()
            old = s.scalars(
                select(SyncRow.id)
                .where(SyncRow.installation_id == installation_id)
                .order_by(SyncRow.started_at.desc(), SyncRow.id.desc())
                .offset(KEEP_PER_PORTAL)
            ).all()
            if old:
                s.execute(delete(SyncRow).where(SyncRow.id.in_(old)))
            return row.id

    def recent(self, installation_id: int | None = None, limit: int = 20) -> list[SyncEntry]:
        """The latest syncs, newest first (of one portal, or of all)."""
        with self.db.read() as s:
            q = select(SyncRow, InstallationRow.domain).join(
                InstallationRow, InstallationRow.id == SyncRow.installation_id
            )
            if installation_id is not None:
                q = q.where(SyncRow.installation_id == installation_id)
            rows = s.execute(q.order_by(SyncRow.started_at.desc(), SyncRow.id.desc()).limit(limit)).all()
            return [
                SyncEntry(
                    r.id,
                    domain,
                    r.started_at,
                    r.finished_at,
                    r.origin,
                    r.dry_run,
                    r.error,
                    list(r.changes),
                    list(r.warnings),
                )
                for r, domain in rows
            ]
