"""Retention: finished journal entries older than their kept period are deleted, in small batches.

Three kinds of finished entries, each with its own period (settings `B24R_RETENTION_*_DAYS`),
counted from when the entry finished (`finished_at`):

- *delivered*: answered and nothing owed any more (delivered, or a robot that wanted no answer),
  without an error;
- *failed*: the same, but the run ended with an error (a `RobotFailure`, or it succeeded only after
  failed attempts): kept longer so the error can still be looked at;
- *dead*: given up, with no notice still owed to the portal.

Nothing that still runs, waits for a retry or owes the portal an answer is ever deleted. Each batch
is one short write transaction (at most `batch` rows), so intake writes interleave with pruning.
A connection call log row goes with its entry (ON DELETE CASCADE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import ColumnElement, and_, delete, func, select, text

from b24robots.store.db import Database
from b24robots.store.journal import ANSWERED, DEAD, DELIVERED
from b24robots.store.models import InvocationRow

DAY = 86400.0
KINDS = ("delivered", "failed", "dead")


@dataclass(frozen=True)
class RetentionPeriods:
    """How many days finished entries of each kind are kept."""

    delivered_days: float = 30.0
    failed_days: float = 90.0
    dead_days: float = 90.0

    def days(self, kind: str) -> float:
        return {"delivered": self.delivered_days, "failed": self.failed_days, "dead": self.dead_days}[kind]


@dataclass
class PruneReport:
    """Entries deleted (or, in a dry run, that would be) per kind."""

    dry_run: bool = False
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def _condition(kind: str, cutoff: float) -> ColumnElement[bool]:
    done = and_(InvocationRow.state.in_((DELIVERED, ANSWERED)), InvocationRow.deliver_after.is_(None))
    old = and_(InvocationRow.finished_at.is_not(None), InvocationRow.finished_at < cutoff)
    if kind == "delivered":
        return and_(done, InvocationRow.error == "", old)
    if kind == "failed":
        return and_(done, InvocationRow.error != "", old)
    # dead, and no notice still owed to the portal
    return and_(InvocationRow.state == DEAD, InvocationRow.deliver_after.is_(None), old)


class Retention:
    def __init__(self, db: Database, periods: RetentionPeriods) -> None:
        self.db = db
        self.periods = periods

    def prune_batch(self, kind: str, *, now: float, batch: int) -> int:
        """Delete at most `batch` entries of `kind` past their period; returns how many."""
        cutoff = now - self.periods.days(kind) * DAY
        with self.db.write() as s:
            ids = list(
                s.scalars(
                    select(InvocationRow.id)
                    .where(_condition(kind, cutoff))
                    .order_by(InvocationRow.finished_at)
                    .limit(batch)
                )
            )
            if ids:
                s.execute(delete(InvocationRow).where(InvocationRow.id.in_(ids)))
            return len(ids)

    def count(self, kind: str, *, now: float) -> int:
        """How many entries of `kind` are past their period (what a prune would delete)."""
        cutoff = now - self.periods.days(kind) * DAY
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(InvocationRow).where(_condition(kind, cutoff))) or 0)

    def prune(self, *, now: float, batch: int = 500, dry_run: bool = False) -> PruneReport:
        """Delete everything past its period, batch after batch (or only count it with `dry_run`)."""
        report = PruneReport(dry_run=dry_run)
        for kind in KINDS:
            if dry_run:
                report.deleted[kind] = self.count(kind, now=now)
                continue
            while True:
                n = self.prune_batch(kind, now=now, batch=batch)
                report.deleted[kind] += n
                if n < batch:
                    break
        return report


def database_size(db: Database) -> int | None:
    """Bytes the database takes on disk: the SQLite file with its WAL, or `pg_database_size`.

    None when it cannot be told (an in-memory SQLite database, a file that cannot be read).
    """
    if db.is_sqlite:
        name = db.engine.url.database
        if not name or name == ":memory:":
            return None
        total = 0
        for path in (Path(name), Path(f"{name}-wal")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
            except OSError:
                return None
        return total
    with db.read() as s:
        size = s.scalar(text("SELECT pg_database_size(current_database())"))
    return int(size) if size is not None else None
