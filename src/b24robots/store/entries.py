"""Journal entries as the rest of the server sees them: states, the new-entry shapes, and what a
stored row becomes (`entry`). The queries live in journal.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from b24robots.policy import past_deadline
from b24robots.store.models import InvocationRow


class State(StrEnum):
    """Where a journal entry is: queued -> running -> answered -> delivered, or failed (a retry is due)
    and dead (given up). Stored as its text; equal to it, so a state compares with its name as text."""

    QUEUED = "queued"
    RUNNING = "running"
    ANSWERED = "answered"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD = "dead"


class Kind(StrEnum):
    """What a journal entry is: a robot call a portal made, or a call we make (a trigger fire, a
    workflow start)."""

    ROBOT = "robot"
    CALL = "call"


QUEUED, RUNNING, ANSWERED, DELIVERED, FAILED, DEAD = State
STATES = tuple(State)
NOTIFY_CHANNEL = "b24r_queue"
ROBOT, CALL = Kind
CALL_PREFIX = "call:"


@dataclass(frozen=True)
class NewInvocation:
    event_token: str
    installation_id: int
    robot_code: str
    origin: str
    robot_version_id: int | None
    workflow_id: str
    document_id: list[str]
    document_type: list[str]
    use_subscription: bool
    timeout_duration: int
    portal_ts: int
    auth_user_id: int | None
    properties: dict[str, Any]
    inputs: dict[str, Any] | None
    # the run-as user's access token that came with the call and its expiry (unix time); the intake's
    # writer stores it encrypted (store/caller_tokens.py); never shown
    caller_token: str | None = field(default=None, repr=False)
    caller_expires_at: float | None = None


@dataclass(frozen=True)
class Invocation:
    """A journal entry as the workers, the sender and the UI see it."""

    id: int
    event_token: str
    installation_id: int
    robot_code: str
    origin: str
    robot_version_id: int | None
    workflow_id: str
    document_id: list[str]
    document_type: list[str]
    use_subscription: bool
    timeout_duration: int
    auth_user_id: int | None
    properties: dict[str, Any]
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None
    log: list[str]
    log_message: str
    state: State
    attempts: int
    deliver_attempts: int
    error: str
    received_at: float
    started_at: float | None
    finished_at: float | None
    delivered_at: float | None
    deadline_at: float | None
    replay_of: int | None
    deliver_after: float | None = None
    kind: Kind = ROBOT
    ran: dict[str, Any] | None = None
    attempt_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def owed(self) -> bool:
        """An answer is still to be sent to the portal."""
        return self.deliver_after is not None

    def too_late(self, now: float) -> bool:
        return past_deadline(now, self.deadline_at)


def entry(row: InvocationRow) -> Invocation:
    return Invocation(
        id=row.id,
        event_token=row.event_token,
        installation_id=row.installation_id,
        robot_code=row.robot_code,
        origin=row.origin,
        robot_version_id=row.robot_version_id,
        workflow_id=row.workflow_id,
        document_id=list(row.document_id),
        document_type=list(row.document_type),
        use_subscription=row.use_subscription,
        timeout_duration=row.timeout_duration,
        auth_user_id=row.auth_user_id,
        properties=dict(row.properties),
        inputs=row.inputs,
        outputs=row.outputs,
        log=list(row.log),
        log_message=row.log_message,
        state=State(row.state),
        attempts=row.attempts,
        deliver_attempts=row.deliver_attempts,
        error=row.error,
        received_at=row.received_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        delivered_at=row.delivered_at,
        deadline_at=row.deadline_at,
        replay_of=row.replay_of,
        deliver_after=row.deliver_after,
        kind=Kind(row.kind or ROBOT),
        ran=row.ran,
        attempt_log=list(row.attempt_log or ()),
    )


@dataclass(frozen=True)
class NewCall:
    """An outbound REST call owed to a portal. `key` deduplicates: the same key is stored once."""

    key: str
    installation_id: int
    method: str
    params: dict[str, Any]
    label: str  # what the UI shows: the trigger code, or "bp:<template id>"
    origin: str  # robot | cli | api | ui
    document_id: list[str]
    fingerprint: str = ""  # a hash of the request that asked for it (idempotency checks)
    check: dict[str, Any] | None = None  # crm.item.get parameters the sender asks first (entity exists?)


def call_status(inv: Invocation) -> str:
    """pending (still to be sent or retried), delivered, or failed (given up; `error` says why)."""
    if inv.state == DELIVERED:
        return "delivered"
    if inv.state == DEAD:
        return "failed"
    return "pending"


def deadline_of(new: NewInvocation, now: float) -> float | None:
    if new.timeout_duration <= 0:
        return None
    # the portal's clock may differ from ours; trust the earlier of the two starts
    start = min(float(new.portal_ts), now) if new.portal_ts > 0 else now
    return start + new.timeout_duration


MAX_ATTEMPTS_KEPT = 50  # the oldest attempts go first past this (a retry loop must not grow a row forever)
MAX_ATTEMPT_ERROR = 4000


def attempt_record(
    row: InvocationRow, *, outcome: str, error: str, log: list[str], ran: dict[str, Any] | None, now: float
) -> list[dict[str, Any]]:
    """The row's attempt log with the attempt that just ended appended (a new list: JSON columns are
    only written when assigned)."""
    done = {
        "attempt": row.attempts,
        "started_at": row.started_at,
        "finished_at": now,
        "outcome": outcome,
        "error": error if len(error) <= MAX_ATTEMPT_ERROR else error[: MAX_ATTEMPT_ERROR - 1] + "…",
        "log": list(log),
        "ran": ran,
    }
    kept = list(row.attempt_log or ())[-(MAX_ATTEMPTS_KEPT - 1) :]
    return [*kept, done]
