"""The rate limiter's shared state (`b24robots.rest.limiter.LimiterState`): each portal's GCRA bucket in
its installation row, so every process that uses the same database takes its slots from one bucket.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from b24robots.errors import NotFound
from b24robots.rest.limiter import gcra_full, gcra_take
from b24robots.store.db import Database
from b24robots.store.models import InstallationRow


class LimiterBuckets:
    def __init__(self, db: Database) -> None:
        self.db = db

    def take(self, portal: str, clock: Callable[[], float], rate: float, burst: int) -> float:
        """Take one slot of the portal's bucket if it is free now; else return the wait, taking nothing.

        Atomic across processes (row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite); `clock` is read
        once the row is locked, so time spent waiting for the lock is not counted as sent. The rate
        and burst stored in the row win over the caller's (`rate`, `burst` are what a caller
        assumes), so `b24robots installations limits` reaches every running process at once. Not waited
        to disk: a slot undone by a crash of the machine at worst lets one request meet the portal's own
        limit, which the client handles (QUERY_LIMIT_EXCEEDED: backoff, retry).
        """
        with self.db.write(durable=False) as s:
            tat, stored_rate, stored_burst = self._bucket(s, portal)
            new_tat, wait = gcra_take(tat, clock(), stored_rate or rate, stored_burst or burst)
            if wait <= 0:
                row = update(InstallationRow).where(InstallationRow.member_id == portal)
                s.execute(row.values(limiter_tat=new_tat))
            return wait

    def backoff(self, portal: str, now: float, rate: float, burst: int) -> None:
        """The portal refused a request with QUERY_LIMIT_EXCEEDED at `now`: count its bucket as full,
        so every process waits for a slot to leak before its next request."""
        with self.db.write(durable=False) as s:
            tat, stored_rate, stored_burst = self._bucket(s, portal)
            full = gcra_full(tat, now, stored_rate or rate, stored_burst or burst)
            s.execute(update(InstallationRow).where(InstallationRow.member_id == portal).values(limiter_tat=full))

    def _bucket(self, s: Session, portal: str) -> tuple[float, float, int]:
        stmt = select(InstallationRow.limiter_tat, InstallationRow.rate, InstallationRow.burst).where(
            InstallationRow.member_id == portal
        )
        if not self.db.is_sqlite:
            stmt = stmt.with_for_update()
        row = s.execute(stmt).first()
        if row is None:
            raise NotFound(f"no installation stored for portal {portal!r}")
        return float(row[0] or 0.0), row[1], row[2]

    def tat(self, member_id: str) -> float:
        """The stored GCRA theoretical arrival time of a portal's bucket."""
        with self.db.read() as s:
            return float(
                s.scalar(select(InstallationRow.limiter_tat).where(InstallationRow.member_id == member_id)) or 0.0
            )
