"""The invocations table: the journal and the queue at once. This module holds the intake's inserts and the
operators' reads and actions; the workers' queue is store/work_queue.py, the sender's outbox
store/deliveries.py (mixed in here), all over one row mapping (store/entries.py).

States::

    queued ──claim──▶ running ──ok──▶ answered ──sender──▶ delivered
       ▲                 │  └──retry──▶ failed (run_after) ──claim──▶ running
       └──lease expired──┘  └──give up / bad input / too late──▶ dead

An answer is owed to the portal while `deliver_after` is set: for `answered` rows (the outputs) and
for `dead` rows of waiting robots (a short log message and the outputs' defaults), so a workflow is
never left waiting in silence. Claims take a lease; a worker that dies loses it and the row comes
back. Nothing is deleted on dequeue.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from b24robots.errors import NotFound, StoreError
from b24robots.store.db import Database
from b24robots.store.deliveries import Deliveries
from b24robots.store.entries import (
    ANSWERED,
    CALL,
    CALL_PREFIX,
    DEAD,
    DELIVERED,
    FAILED,
    NOTIFY_CHANNEL,
    QUEUED,
    ROBOT,
    RUNNING,
    STATES,
    Invocation,
    NewCall,
    NewInvocation,
    call_status,
    deadline_of,
)
from b24robots.store.entries import entry as _inv
from b24robots.store.models import InstallationRow, InvocationRow
from b24robots.store.work_queue import WorkQueue

__all__ = [
    "ANSWERED",
    "CALL",
    "DEAD",
    "DELIVERED",
    "FAILED",
    "NOTIFY_CHANNEL",
    "QUEUED",
    "ROBOT",
    "RUNNING",
    "STATES",
    "Invocation",
    "Journal",
    "NewCall",
    "NewInvocation",
    "call_status",
    "deadline_of",
]


class Journal(WorkQueue, Deliveries):
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- intake ------------------------------------------------------------------------------
    def enqueue(self, new: NewInvocation, *, now: float | None = None) -> tuple[int, bool]:
        """Store a new invocation; returns (id, created). A known event_token is not stored again."""
        return self._insert(new, state=QUEUED, now=now)

    def enqueue_dead(
        self,
        new: NewInvocation,
        *,
        error: str,
        log_message: str,
        outputs: dict[str, Any],
        now: float | None = None,
    ) -> tuple[int, bool]:
        """Journal an invocation that cannot run (bad input, unknown robot); the portal is still answered."""
        return self._insert(new, state=DEAD, now=now, error=error, log_message=log_message, outputs=outputs)

    def _insert(
        self,
        new: NewInvocation,
        *,
        state: str,
        now: float | None,
        error: str = "",
        log_message: str = "",
        outputs: dict[str, Any] | None = None,
    ) -> tuple[int, bool]:
        now = time.time() if now is None else now
        row = InvocationRow(
            event_token=new.event_token,
            installation_id=new.installation_id,
            robot_code=new.robot_code,
            origin=new.origin,
            robot_version_id=new.robot_version_id,
            workflow_id=new.workflow_id,
            document_id=new.document_id,
            document_type=new.document_type,
            use_subscription=new.use_subscription,
            timeout_duration=new.timeout_duration,
            portal_ts=new.portal_ts,
            auth_user_id=new.auth_user_id,
            properties=new.properties,
            inputs=new.inputs,
            outputs=outputs,
            log=[],
            log_message=log_message,
            state=state,
            attempts=0,
            run_after=now,
            error=error,
            received_at=now,
            deliver_attempts=0,
            deadline_at=deadline_of(new, now),
            deliver_after=now if state == DEAD and new.use_subscription else None,
            finished_at=now if state == DEAD else None,
        )
        try:
            with self.db.write() as s:
                s.add(row)
                s.flush()
                if state == QUEUED or row.deliver_after is not None:
                    self._notify(s)
                return row.id, True
        except IntegrityError:
            with self.db.read() as s:
                existing = s.scalar(select(InvocationRow.id).where(InvocationRow.event_token == new.event_token))
            if existing is None:
                raise StoreError("the invocation could not be stored") from None
            return existing, False

    def enqueue_call(self, new: NewCall, *, now: float | None = None) -> tuple[Invocation, bool]:
        """Store an outbound call, owed at once; returns (entry, created). A known key returns the stored one."""
        now = time.time() if now is None else now
        token = CALL_PREFIX + new.key
        row = InvocationRow(
            event_token=token,
            installation_id=new.installation_id,
            robot_code=new.label,
            origin=new.origin,
            robot_version_id=None,
            workflow_id="",
            document_id=new.document_id,
            document_type=new.document_id[:2] if len(new.document_id) == 3 else [],
            use_subscription=False,
            timeout_duration=0,
            portal_ts=0,
            auth_user_id=None,
            properties={
                "method": new.method,
                "params": new.params,
                "fingerprint": new.fingerprint,
                **({"check": new.check} if new.check else {}),
            },
            inputs=None,
            outputs=None,
            log=[],
            log_message="",
            state=ANSWERED,
            attempts=0,
            run_after=now,
            error="",
            received_at=now,
            finished_at=now,
            deliver_attempts=0,
            deliver_after=now,
            kind=CALL,
        )
        try:
            with self.db.write() as s:
                s.add(row)
                s.flush()
                self._notify(s)
                return _inv(row), True
        except IntegrityError:
            with self.db.read() as s:
                existing = s.scalar(select(InvocationRow).where(InvocationRow.event_token == token))
                if existing is None:
                    raise StoreError("the call could not be stored") from None
                return _inv(existing), False

    def call_results(self, results: dict[int, Any]) -> None:
        """Keep what the portal answered to delivered calls (e.g. the started workflow's id)."""
        if not results:
            return
        with self.db.write() as s:
            for row in s.scalars(select(InvocationRow).where(InvocationRow.id.in_(list(results)))):
                if row.kind == CALL:
                    row.outputs = {"result": results[row.id]}

    def list_calls(
        self, *, key: str | None = None, installation_id: int | None = None, limit: int = 50
    ) -> list[Invocation]:
        """Outbound calls, newest first; `key` finds the one stored under that key."""
        with self.db.read() as s:
            stmt = (
                select(InvocationRow).where(InvocationRow.kind == CALL).order_by(InvocationRow.id.desc()).limit(limit)
            )
            if key is not None:
                stmt = stmt.where(InvocationRow.event_token == CALL_PREFIX + key)
            if installation_id is not None:
                stmt = stmt.where(InvocationRow.installation_id == installation_id)
            return [_inv(r) for r in s.scalars(stmt)]

    # --- operators -------------------------------------------------------------------------------
    def get(self, inv_id: int) -> Invocation:
        with self.db.read() as s:
            row = s.get(InvocationRow, inv_id)
            if row is None:
                raise NotFound(f"no invocation with id {inv_id}; see `b24robots journal`")
            return _inv(row)

    def recent(
        self,
        *,
        state: str | None = None,
        robot: str | None = None,
        installation_id: int | None = None,
        since: float | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Invocation]:
        with self.db.read() as s:
            stmt = select(InvocationRow).order_by(InvocationRow.id.desc()).limit(limit)
            if state:
                stmt = stmt.where(InvocationRow.state == state)
            if robot:
                stmt = stmt.where(InvocationRow.robot_code == robot)
            if installation_id is not None:
                stmt = stmt.where(InvocationRow.installation_id == installation_id)
            if since is not None:
                stmt = stmt.where(InvocationRow.received_at >= since)
            if before_id is not None:
                stmt = stmt.where(InvocationRow.id < before_id)
            return [_inv(r) for r in s.scalars(stmt)]

    def retry(self, inv_id: int, now: float | None = None) -> Invocation:
        """Run a failed or dead invocation again now (same event token)."""
        now = time.time() if now is None else now
        with self.db.write() as s:
            row = s.get(InvocationRow, inv_id)
            if row is None:
                raise NotFound(f"no invocation with id {inv_id}")
            if row.state not in (FAILED, DEAD):
                raise StoreError(f"invocation {inv_id} is {row.state}; only failed or dead ones can be retried")
            if row.kind == CALL:  # an outbound call is owed again; it never goes to the workers
                row.state, row.error, row.deliver_after, row.deliver_attempts = ANSWERED, "", now, 0
                row.finished_at = now  # owed again from now: the give-up period starts again
                row.lease_owner = row.lease_expires_at = row.lease_process = None
                self._notify(s)
                s.flush()
                return _inv(row)
            row.state, row.run_after, row.error, row.deliver_after = QUEUED, now, "", None
            row.lease_owner = row.lease_expires_at = row.lease_process = None
            self._notify(s)
            s.flush()
            return _inv(row)

    def replay(self, inv_id: int, now: float | None = None) -> Invocation:
        """Run a finished invocation again as a new journal entry with the same inputs."""
        now = time.time() if now is None else now
        with self.db.write() as s:
            src = s.get(InvocationRow, inv_id)
            if src is None:
                raise NotFound(f"no invocation with id {inv_id}")
            if src.kind == CALL:
                raise StoreError(f"entry {inv_id} is an outbound call; fire it again instead of replaying it")
            count = s.scalar(select(func.count()).where(InvocationRow.replay_of == inv_id)) or 0
            row = InvocationRow(
                event_token=f"{src.event_token}#replay{count + 1}",
                installation_id=src.installation_id,
                robot_code=src.robot_code,
                origin=src.origin,
                robot_version_id=None,
                workflow_id=src.workflow_id,
                document_id=src.document_id,
                document_type=src.document_type,
                use_subscription=src.use_subscription,
                timeout_duration=0,
                portal_ts=src.portal_ts,
                auth_user_id=src.auth_user_id,
                properties=src.properties,
                inputs=src.inputs,
                log=[],
                log_message="",
                state=QUEUED,
                attempts=0,
                run_after=now,
                error="",
                received_at=now,
                deliver_attempts=0,
                replay_of=src.id,
            )
            s.add(row)
            self._notify(s)
            s.flush()
            return _inv(row)

    def original_token(self, inv: Invocation) -> str:
        """The portal's event token (replays carry a suffix to stay unique in the journal)."""
        return inv.event_token.split("#replay", 1)[0]

    # --- metrics -------------------------------------------------------------------------------
    def counts(self) -> list[tuple[str, str, int]]:
        """(state, robot_code, count) for every pair present."""
        with self.db.read() as s:
            rows = s.execute(
                select(InvocationRow.state, InvocationRow.robot_code, func.count()).group_by(
                    InvocationRow.state, InvocationRow.robot_code
                )
            ).all()
            return [(st, code, int(n)) for st, code, n in rows]

    def depth_by_portal(self) -> list[tuple[str, int, int]]:
        """(domain, runnable, answers owed) per installation."""
        with self.db.read() as s:
            runnable = func.sum(case((InvocationRow.state.in_((QUEUED, FAILED, RUNNING)), 1), else_=0))
            owed = func.sum(case((InvocationRow.deliver_after.is_not(None), 1), else_=0))
            rows = s.execute(
                select(InstallationRow.domain, runnable, owed)
                .join(InstallationRow, InstallationRow.id == InvocationRow.installation_id)
                .group_by(InstallationRow.domain)
            ).all()
            return [(d, int(a or 0), int(b or 0)) for d, a, b in rows]

    def _notify(self, s: Session) -> None:
        if not self.db.is_sqlite:
            s.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")))
