"""The sender's side of the journal: leasing the answers owed to a portal and recording how their
delivery went. Mixed into `Journal` (journal.py), whose database and `_notify` it uses."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from b24robots.policy import delivery_gives_up
from b24robots.store.db import Database
from b24robots.store.entries import ANSWERED, DEAD, DELIVERED, Invocation
from b24robots.store.entries import entry as _inv
from b24robots.store.models import InstallationRow, InvocationRow


class Deliveries:
    db: Database

    def _notify(self, s: Session) -> None:
        raise NotImplementedError

    def portals_owing(self, now: float | None = None, limit: int = 10_000) -> list[int]:
        """Installations with answers due, the longest-waiting first (fair across portals)."""
        now = time.time() if now is None else now
        with self.db.read() as s:
            rows = s.execute(
                select(InvocationRow.installation_id, func.min(InvocationRow.deliver_after).label("oldest"))
                .join(InstallationRow, InstallationRow.id == InvocationRow.installation_id)
                .where(
                    InstallationRow.status == "active",
                    InvocationRow.deliver_after <= now,
                    or_(InvocationRow.lease_expires_at.is_(None), InvocationRow.lease_expires_at < now),
                )
                .group_by(InvocationRow.installation_id)
                .order_by("oldest")
                .limit(limit)
            ).all()
            return [r[0] for r in rows]

    def claim_deliveries(
        self,
        installation_id: int,
        owner: str,
        *,
        limit: int,
        lease: float,
        now: float | None = None,
        process: str | None = None,
    ) -> list[Invocation]:
        """Lease up to `limit` answers owed to one portal for a batch (`process` as for `claim`)."""
        now = time.time() if now is None else now
        # a lease undone by a crash of the machine only makes the answers owed again: no need to wait for the disk
        with self.db.write(durable=False) as s:
            stmt = (
                select(InvocationRow.__table__)  # Core rows: no ORM objects to build and track for a batch
                .where(
                    InvocationRow.installation_id == installation_id,
                    InvocationRow.deliver_after <= now,
                    or_(InvocationRow.lease_expires_at.is_(None), InvocationRow.lease_expires_at < now),
                )
                .order_by(InvocationRow.deliver_after, InvocationRow.id)
                .limit(limit)
            )
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            found = [_inv(r) for r in s.execute(stmt)]  # type: ignore[arg-type]  # a Row has the same attributes
            if found:
                # one UPDATE for the batch (the ORM's unit of work wrote the leases row by row: a third of
                # the sender's CPU per batch)
                s.execute(
                    update(InvocationRow)
                    .where(InvocationRow.id.in_([i.id for i in found]))
                    .values(lease_owner=owner, lease_expires_at=now + lease, lease_process=process)
                    .execution_options(synchronize_session=False)
                )
            return found

    def unlease(self, ids: Sequence[int], owner: str) -> None:
        """Give delivery leases back untouched (the answers did not fit into this batch)."""
        with self.db.write(durable=False) as s:  # if undone, the lease lapses: a delay, nothing lost
            s.execute(
                update(InvocationRow)
                .where(InvocationRow.id.in_(ids), InvocationRow.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None, lease_process=None)
            )

    def delivered(self, ids: Sequence[int], owner: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.db.write() as s:  # one UPDATE: only the rows this owner still holds
            s.execute(
                update(InvocationRow)
                .where(InvocationRow.id.in_(ids), InvocationRow.lease_owner == owner)
                .values(
                    state=case((InvocationRow.state == ANSWERED, DELIVERED), else_=InvocationRow.state),
                    delivered_at=now,
                    deliver_after=None,
                    deliver_attempts=InvocationRow.deliver_attempts + 1,
                    lease_owner=None,
                    lease_expires_at=None,
                    lease_process=None,
                )
                .execution_options(synchronize_session=False)
            )

    def delivery_failed(
        self,
        ids: Sequence[int],
        owner: str,
        *,
        error: str,
        delay: float,
        give_up_seconds: float,
        final: bool = False,
        now: float | None = None,
    ) -> None:
        """A delivery failed: owed again after `delay`, or given up (dead) when `final` or when
        `policy.delivery_gives_up` says so (the workflow's deadline; else `give_up_seconds` after the
        answer became owed).
        """
        now = time.time() if now is None else now
        with self.db.write() as s:
            for row in s.scalars(select(InvocationRow).where(InvocationRow.id.in_(ids))):
                if row.lease_owner != owner:
                    continue
                row.deliver_attempts += 1
                row.lease_owner = row.lease_expires_at = row.lease_process = None
                row.error = f"delivery: {error}"
                owed_since = row.finished_at if row.finished_at is not None else row.received_at
                if final or delivery_gives_up(
                    now, deadline_at=row.deadline_at, owed_since=owed_since, give_up_seconds=give_up_seconds
                ):
                    row.state, row.deliver_after = DEAD, None
                    if not final:
                        row.error += (
                            "; given up: the workflow's timeout passed"
                            if row.deadline_at is not None
                            else f"; given up after {give_up_seconds / 86400:g} day(s) of failed deliveries"
                        )
                else:
                    row.deliver_after = now + delay

    def delivery_deferred(
        self, ids: Sequence[int], owner: str, *, delay: float, reason: str, now: float | None = None
    ) -> None:
        """Owed again after `delay` without counting an attempt (the portal could not take it yet)."""
        now = time.time() if now is None else now
        with self.db.write() as s:
            for row in s.scalars(select(InvocationRow).where(InvocationRow.id.in_(ids))):
                if row.lease_owner != owner:
                    continue
                row.lease_owner = row.lease_expires_at = row.lease_process = None
                row.error = f"delivery: {reason}"
                row.deliver_after = now + delay

    def expire_late(self, ids: Sequence[int], owner: str, now: float | None = None) -> None:
        """The workflow stopped waiting: never answer after timeout_duration."""
        now = time.time() if now is None else now
        with self.db.write() as s:
            for row in s.scalars(select(InvocationRow).where(InvocationRow.id.in_(ids))):
                if row.lease_owner != owner:
                    continue
                row.state, row.deliver_after = DEAD, None
                row.error = (row.error + "; " if row.error else "") + "not answered: the workflow's timeout passed"
                row.lease_owner = row.lease_expires_at = row.lease_process = None
                row.caller_token = row.caller_expires_at = None
