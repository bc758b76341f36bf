"""Retries, backoff and deadlines: one pure function per rule.

Every place that decides "try again, when, or give up" asks this module: the runner's retries of a
robot (`RetryRules`), the worker's deadline margin, the sender's backoff and give-up, and the REST
client's short in-call retries (`RetryPolicy`). Nothing here reads a clock or a database; callers
pass `now` and the stored facts, so the rules are tested by tables (tests/test_policy.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from b24robots.errors import QueryLimitExceeded, ServerError, TransportError

DAY = 86400.0


def backoff(attempt: int, *, base: float, cap: float, jitter: float = 0.0) -> float:
    """Seconds before retry number `attempt` (1 = the first retry): `base`·2^(attempt−1) + `jitter`, at most `cap`.

    An attempt below 1 counts as 1. `jitter` is a random draw the caller made (0 for none).
    """
    try:
        value = base * 2.0 ** (max(1, attempt) - 1)
    except OverflowError:
        return cap
    return min(cap, value + jitter)


# --- a robot's run --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryRules:
    """How often and how late a failing robot runs again.

    An unexpected exception is retried while `attempt < max_attempts` (the run that failed was
    number `attempt`), after `backoff(attempt)`: 5 s, 10 s, 20 s ... up to 10 min. A robot that
    asks for `Retry(...)` itself may do so `max_signal_retries` times.
    """

    max_attempts: int = 5
    max_signal_retries: int = 50
    base_delay: float = 5.0
    max_delay: float = 600.0

    def backoff(self, attempt: int) -> float:
        return backoff(attempt, base=self.base_delay, cap=self.max_delay)

    def may_retry(self, attempt: int) -> bool:
        return attempt < self.max_attempts

    def may_signal_retry(self, attempt: int) -> bool:
        return attempt < self.max_signal_retries


def answer_margin(timeout_duration: int) -> float:
    """Time kept free before a workflow's deadline to deliver a failure notice: a quarter of the timeout, 1–5 s."""
    return min(5.0, max(1.0, 0.25 * timeout_duration))


def retry_in_time(now: float, delay: float, deadline_at: float | None, timeout_duration: int) -> bool:
    """A retry `delay` seconds from `now` still leaves the margin to answer before the deadline (None = none)."""
    return deadline_at is None or now + delay + answer_margin(timeout_duration) < deadline_at


# --- delivering answers to the portal ----------------------------------------------------------------
DELIVERY_BASE_DELAY = 5.0
DELIVERY_MAX_DELAY = 300.0
FAILED_COMMAND_DELAY = 30.0
"""A command the portal refused inside a batch that went through is tried again this much later."""
DEFAULT_GIVE_UP_DAYS = 7.0
LOCKED_WORKFLOW_DELAY = 3.0
"""An answer whose workflow was locked (the probe answered 423) is sent again this much later; not an attempt."""


def delivery_backoff(deliver_attempts: int) -> float:
    """Wait after a failed batch whose first answer failed `deliver_attempts` times: 5 s doubling, 5 min at most."""
    return backoff(deliver_attempts + 1, base=DELIVERY_BASE_DELAY, cap=DELIVERY_MAX_DELAY)


def past_deadline(now: float, deadline_at: float | None) -> bool:
    """The workflow stopped waiting: its deadline (None = it waits without one) has come."""
    return deadline_at is not None and now >= deadline_at


def delivery_gives_up(now: float, *, deadline_at: float | None, owed_since: float, give_up_seconds: float) -> bool:
    """An owed answer is given up when the workflow stopped waiting (its own deadline, from
    `timeout_duration`) or, for a workflow that waits without a deadline, `give_up_seconds` after it
    became owed. The number of failed attempts does not matter.
    """
    if deadline_at is not None:
        return past_deadline(now, deadline_at)
    return now >= owed_since + give_up_seconds


# --- the REST client's in-call retries --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Short in-call retries of one REST request; long backoff belongs to the job queue.

    `attempts` and `timeout` (seconds, real time since the first attempt) bound every call; the
    wait before retry n is `backoff(n, base=wait_initial, cap=wait_max, jitter=<0..wait_jitter>)`.
    OPERATION_TIME_LIMIT waits for `time.operating_reset_at` only when that is at most
    `max_operation_wait` away.
    """

    attempts: int = 5
    timeout: float = 30.0
    wait_initial: float = 0.5
    wait_max: float = 5.0
    wait_jitter: float = 0.5
    max_operation_wait: float = 60.0

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt, no waiting: every failure surfaces at once (tests, the queue's own retries)."""
        return cls(attempts=1, max_operation_wait=0.0)

    def wait(self, attempt: int, jitter_draw: float) -> float:
        """Seconds before retry `attempt`; `jitter_draw` in [0, 1) picks the jitter."""
        return backoff(attempt, base=self.wait_initial, cap=self.wait_max, jitter=jitter_draw * self.wait_jitter)

    def retry_after(self, attempt: int, elapsed: float) -> bool:
        """Another try is allowed after failed attempt `attempt`, `elapsed` seconds into the call."""
        return attempt < self.attempts and elapsed < self.timeout


def rest_retryable(exc: Exception, idempotent: bool) -> bool:
    """A failed REST request may be sent again: a rate-limit refusal always (it never ran); a
    server error or a lost connection only for a call that is safe to repeat; a bad redirect never.
    """
    if isinstance(exc, QueryLimitExceeded):
        return True
    if isinstance(exc, TransportError) and exc.code in ("TOO_MANY_REDIRECTS", "BAD_REDIRECT"):
        return False
    return idempotent and isinstance(exc, ServerError | TransportError)
