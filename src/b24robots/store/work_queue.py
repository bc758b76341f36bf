"""The workers' side of the journal: claiming runnable invocations under a lease, extending it, and
recording how an attempt ended (answered, to be retried, dead). Mixed into `Journal` (journal.py), whose
database and `_notify` it uses; the rows are store/entries.py's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from b24robots.policy import past_deadline
from b24robots.store.db import Database
from b24robots.store.entries import ANSWERED, DEAD, FAILED, QUEUED, RUNNING, Invocation, attempt_record
from b24robots.store.entries import entry as _inv
from b24robots.store.models import InvocationRow


class WorkQueue:
    db: Database

    def _notify(self, s: Session) -> None:
        raise NotImplementedError

    def claim(
        self, owner: str, limit: int, lease: float, now: float | None = None, *, process: str | None = None
    ) -> list[Invocation]:
        """Take up to `limit` runnable invocations (queued, failed and due, or with an expired lease).

        `process` (store/processes.py) names the process holding the lease, so it can be reclaimed.
        """
        now = time.time() if now is None else now
        cond = or_(
            and_(InvocationRow.state.in_((QUEUED, FAILED)), InvocationRow.run_after <= now),
            and_(InvocationRow.state == RUNNING, InvocationRow.lease_expires_at < now),
        )
        with self.db.write() as s:
            stmt = select(InvocationRow).where(cond).order_by(InvocationRow.run_after, InvocationRow.id).limit(limit)
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            rows = list(s.scalars(stmt))
            for row in rows:
                row.state = RUNNING
                row.lease_owner = owner
                row.lease_expires_at = now + lease
                row.lease_process = process
                row.attempts += 1
                row.started_at = now
            s.flush()
            return [_inv(r) for r in rows]

    def next_due(self) -> float | None:
        """When the earliest waiting retry (or expiring lease) becomes runnable; None if nothing waits."""
        with self.db.read() as s:
            retry = s.scalar(select(func.min(InvocationRow.run_after)).where(InvocationRow.state.in_((QUEUED, FAILED))))
            lease = s.scalar(select(func.min(InvocationRow.lease_expires_at)).where(InvocationRow.state == RUNNING))
        due = [t for t in (retry, lease) if t is not None]
        return min(due) if due else None

    def extend(self, ids: Sequence[int], owner: str, lease: float, now: float | None = None) -> int:
        """Push the lease of running invocations further; returns how many are still ours."""
        if not ids:
            return 0
        now = time.time() if now is None else now
        with self.db.write() as s:
            result = s.execute(
                update(InvocationRow)
                .where(
                    InvocationRow.id.in_(ids),
                    InvocationRow.lease_owner == owner,
                    InvocationRow.state == RUNNING,
                )
                .values(lease_expires_at=now + lease)
            )
            return int(getattr(result, "rowcount", 0))

    def _owned(self, s: Session, inv_id: int, owner: str) -> InvocationRow | None:
        row = s.get(InvocationRow, inv_id)
        if row is None or row.state != RUNNING or row.lease_owner != owner:
            return None  # the lease was lost: somebody else runs it now; our result is dropped
        return row

    @staticmethod
    def _ran(
        row: InvocationRow, outcome: str, error: str, log: list[str], ran: dict[str, Any] | None, now: float
    ) -> None:
        """Keep what the attempt that just ended ran and logged. `ran` is {"origin": "stored", "version_id",
        "version", "hash"} or {"origin": "module", "module", "fingerprint"}; the entry then names the stored
        version that really ran (a version activated after the call arrived may be the one)."""
        if ran is not None:
            row.ran = ran
            row.origin = str(ran.get("origin") or row.origin)
            version_id = ran.get("version_id")
            row.robot_version_id = version_id if isinstance(version_id, int) else None
        row.attempt_log = attempt_record(row, outcome=outcome, error=error, log=log, ran=ran, now=now)

    def finish(
        self,
        inv_id: int,
        owner: str,
        *,
        outputs: dict[str, Any],
        log: list[str],
        log_message: str = "",
        error: str = "",
        ran: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> bool:
        """The run ended (successfully, or with a business failure in `error`): an answer is owed.

        `ran` says what ran (see `_ran`); the attempt, its log and error join the attempt log."""
        now = time.time() if now is None else now
        with self.db.write() as s:
            row = self._owned(s, inv_id, owner)
            if row is None:
                return False
            self._ran(row, ANSWERED, error, log, ran, now)
            row.state = ANSWERED
            row.outputs, row.log, row.log_message, row.error = outputs, log, log_message, error
            row.finished_at = now
            row.lease_owner = row.lease_expires_at = row.lease_process = None
            row.caller_token = row.caller_expires_at = None  # the run is over: the user's token goes
            row.deliver_after = now if row.use_subscription else None
            self._notify(s)
            return True

    def retry_later(
        self,
        inv_id: int,
        owner: str,
        *,
        delay: float,
        error: str,
        log: list[str],
        ran: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> bool:
        """The attempt failed and runs again after `delay`; its log and error stay in the attempt log."""
        now = time.time() if now is None else now
        with self.db.write() as s:
            row = self._owned(s, inv_id, owner)
            if row is None:
                return False
            self._ran(row, FAILED, error, log, ran, now)
            row.state, row.run_after, row.error, row.log = FAILED, now + delay, error, log
            row.lease_owner = row.lease_expires_at = row.lease_process = None
            if row.caller_expires_at is not None and row.caller_expires_at <= row.run_after:
                row.caller_token = row.caller_expires_at = None  # expired before the next attempt: useless
            return True

    def kill(
        self,
        inv_id: int,
        owner: str | None,
        *,
        error: str,
        log: list[str],
        log_message: str,
        outputs: dict[str, Any],
        ran: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> bool:
        """Give up: dead, with the error kept and (for waiting robots) a notice owed to the portal."""
        now = time.time() if now is None else now
        with self.db.write() as s:
            row = self._owned(s, inv_id, owner) if owner is not None else s.get(InvocationRow, inv_id)
            if row is None:
                return False
            if row.state == RUNNING:  # an attempt ends here (not a row given up before it ever ran)
                self._ran(row, DEAD, error, log, ran, now)
            row.state, row.error, row.log, row.log_message, row.outputs = (
                DEAD,
                error,
                log,
                log_message,
                outputs,
            )
            row.finished_at = now
            row.lease_owner = row.lease_expires_at = row.lease_process = None
            row.caller_token = row.caller_expires_at = None
            too_late = past_deadline(now, row.deadline_at)
            row.deliver_after = now if row.use_subscription and not too_late else None
            self._notify(s)
            return True

    def abandon_portal(self, installation_id: int, reason: str, now: float | None = None) -> int:
        """The portal is gone (uninstall): whatever waits to run or to be answered there is dead."""
        now = time.time() if now is None else now
        with self.db.write() as s:
            result = s.execute(
                update(InvocationRow)
                .where(
                    InvocationRow.installation_id == installation_id,
                    or_(InvocationRow.state.in_((QUEUED, FAILED, RUNNING)), InvocationRow.deliver_after.is_not(None)),
                )
                .values(
                    state=DEAD,
                    error=reason,
                    deliver_after=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    lease_process=None,
                    finished_at=func.coalesce(InvocationRow.finished_at, now),
                    caller_token=None,
                    caller_expires_at=None,
                )
            )
            return int(getattr(result, "rowcount", 0))

    def release(self, owner: str) -> int:
        """Give back every lease of `owner` (graceful shutdown): the rows run again elsewhere."""
        with self.db.write() as s:
            result = s.execute(
                update(InvocationRow)
                .where(InvocationRow.lease_owner == owner, InvocationRow.state == RUNNING)
                .values(
                    state=QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    lease_process=None,
                    attempts=InvocationRow.attempts - 1,
                )
            )
            return int(getattr(result, "rowcount", 0))
