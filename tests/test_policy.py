"""The retry, backoff and deadline rules of `b24robots.policy`, one table each."""

from __future__ import annotations

import pytest

from b24robots.errors import MethodError, QueryLimitExceeded, ServerError, TransportError
from b24robots.policy import (
    RetryPolicy,
    RetryRules,
    answer_margin,
    backoff,
    delivery_backoff,
    delivery_gives_up,
    past_deadline,
    rest_retryable,
    retry_in_time,
)


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter", "expected"),
    [
        (1, 5.0, 600.0, 0.0, 5.0),
        (2, 5.0, 600.0, 0.0, 10.0),
        (3, 5.0, 600.0, 0.0, 20.0),
        (7, 5.0, 600.0, 0.0, 320.0),
        (8, 5.0, 600.0, 0.0, 600.0),  # 640 capped
        (0, 5.0, 600.0, 0.0, 5.0),  # below 1 counts as 1
        (-3, 5.0, 600.0, 0.0, 5.0),
        (5000, 5.0, 600.0, 0.0, 600.0),  # overflow: the cap
        (1, 0.5, 5.0, 0.25, 0.75),
        (4, 0.5, 5.0, 0.5, 4.5),
        (5, 0.5, 5.0, 0.5, 5.0),  # 8.5 capped, jitter included
    ],
)
def test_backoff(attempt: int, base: float, cap: float, jitter: float, expected: float) -> None:
    assert backoff(attempt, base=base, cap=cap, jitter=jitter) == expected


@pytest.mark.parametrize(
    ("attempt", "delay", "may_retry"),
    [(1, 5.0, True), (2, 10.0, True), (4, 40.0, True), (5, 80.0, False), (6, 160.0, False), (8, 600.0, False)],
)
def test_robot_retry_rules(attempt: int, delay: float, may_retry: bool) -> None:
    rules = RetryRules()
    assert rules.backoff(attempt) == delay
    assert rules.may_retry(attempt) is may_retry


@pytest.mark.parametrize(("attempt", "allowed"), [(1, True), (49, True), (50, False), (51, False)])
def test_signal_retries(attempt: int, allowed: bool) -> None:
    assert RetryRules().may_signal_retry(attempt) is allowed


@pytest.mark.parametrize(
    ("timeout", "margin"), [(0, 1.0), (2, 1.0), (4, 1.0), (8, 2.0), (20, 5.0), (21, 5.0), (3600, 5.0)]
)
def test_answer_margin(timeout: int, margin: float) -> None:
    assert answer_margin(timeout) == margin


@pytest.mark.parametrize(
    ("now", "delay", "deadline", "timeout", "in_time"),
    [
        (100.0, 5.0, None, 0, True),  # no deadline: always
        (100.0, 5.0, 120.0, 20, True),  # 105 + 5 < 120
        (100.0, 15.0, 120.0, 20, False),  # 115 + 5 == 120: no room for the notice
        (100.0, 14.9, 120.0, 20, True),
        (100.0, 0.0, 101.0, 4, False),  # 100 + 1 == 101
        (100.0, 0.0, 101.5, 4, True),
    ],
)
def test_retry_in_time(now: float, delay: float, deadline: float | None, timeout: int, in_time: bool) -> None:
    assert retry_in_time(now, delay, deadline, timeout) is in_time


@pytest.mark.parametrize(
    ("failed_before", "delay"), [(0, 5.0), (1, 10.0), (2, 20.0), (5, 160.0), (6, 300.0), (24, 300.0), (10**6, 300.0)]
)
def test_delivery_backoff(failed_before: int, delay: float) -> None:
    assert delivery_backoff(failed_before) == delay


DAY = 86400.0


@pytest.mark.parametrize(
    ("now", "deadline", "owed_since", "give_up_seconds", "gives_up"),
    [
        (1000.0, 1600.0, 1000.0, 7 * DAY, False),
        (1599.9, 1600.0, 1000.0, 7 * DAY, False),
        (1600.0, 1600.0, 1000.0, 7 * DAY, True),  # the workflow's own deadline
        (1600.0, 1600.0, 1000.0, 1.0, True),
        (1500.0, 1600.0, 1000.0, 1.0, False),  # a deadline wins over the days setting
        (1000.0 + 7 * DAY - 1, None, 1000.0, 7 * DAY, False),  # waits forever: the setting
        (1000.0 + 7 * DAY, None, 1000.0, 7 * DAY, True),
        (1000.0 + DAY, None, 1000.0, DAY, True),
    ],
)
def test_delivery_gives_up(
    now: float, deadline: float | None, owed_since: float, give_up_seconds: float, gives_up: bool
) -> None:
    assert (
        delivery_gives_up(now, deadline_at=deadline, owed_since=owed_since, give_up_seconds=give_up_seconds) is gives_up
    )


@pytest.mark.parametrize(
    ("now", "deadline", "past"), [(10.0, None, False), (9.99, 10.0, False), (10.0, 10.0, True), (11.0, 10.0, True)]
)
def test_past_deadline(now: float, deadline: float | None, past: bool) -> None:
    assert past_deadline(now, deadline) is past


@pytest.mark.parametrize(
    ("attempt", "draw", "wait"), [(1, 0.0, 0.5), (1, 0.5, 0.75), (2, 0.0, 1.0), (4, 0.0, 4.0), (5, 0.0, 5.0)]
)
def test_rest_wait(attempt: int, draw: float, wait: float) -> None:
    assert RetryPolicy().wait(attempt, draw) == wait


@pytest.mark.parametrize(
    ("attempt", "elapsed", "again"),
    [(1, 0.0, True), (4, 29.9, True), (5, 0.0, False), (1, 30.0, False), (3, 31.0, False)],
)
def test_rest_retry_after(attempt: int, elapsed: float, again: bool) -> None:
    assert RetryPolicy().retry_after(attempt, elapsed) is again


def test_disabled_rest_policy_never_retries() -> None:
    assert RetryPolicy.disabled().retry_after(1, 0.0) is False


@pytest.mark.parametrize(
    ("exc", "idempotent", "retry"),
    [
        (QueryLimitExceeded("QUERY_LIMIT_EXCEEDED", "too many"), False, True),
        (QueryLimitExceeded("QUERY_LIMIT_EXCEEDED", "too many"), True, True),
        (ServerError("INTERNAL_SERVER_ERROR", "x", status=500), True, True),
        (ServerError("INTERNAL_SERVER_ERROR", "x", status=500), False, False),
        (TransportError("TIMEOUT", "x"), True, True),
        (TransportError("TIMEOUT", "x"), False, False),
        (TransportError("TOO_MANY_REDIRECTS", "x"), True, False),
        (TransportError("BAD_REDIRECT", "x"), True, False),
        (MethodError("NOT_FOUND", "x"), True, False),
        (ValueError("x"), True, False),
    ],
)
def test_rest_retryable(exc: Exception, idempotent: bool, retry: bool) -> None:
    assert rest_retryable(exc, idempotent) is retry
