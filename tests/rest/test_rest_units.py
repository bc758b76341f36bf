"""Pure parts of the REST client: GCRA math, limiter state, error mapping, PHP query encoding."""

from __future__ import annotations

import threading
import time

import pytest
import qs_codec
from hypothesis import given, settings
from hypothesis import strategies as st
from qs_codec import EncodeOptions, Format, ListFormat

from b24robots import errors
from b24robots.rest import (
    ARRIVAL_SLACK,
    MemoryLimiterState,
    error_from_answer,
    gcra_full,
    gcra_take,
    gcra_wait,
    http_build_query,
    limiter,
    map_error,
)

# -- GCRA -------------------------------------------------------------------------------------------


def take_all(state_tat: float, now: float, n: int, rate: float = 2.0, burst: int = 50) -> tuple[float, list[float]]:
    """Take `n` slots in order at `now`, each after waiting for it; return the tat and the send times."""
    tat, sent = state_tat, []
    for _ in range(n):
        while True:
            tat, wait = gcra_take(tat, now, rate, burst, slack=0.0)
            if wait == 0:
                break
            now += wait
        sent.append(now)
    return tat, sent


def test_gcra_burst_then_rate() -> None:
    tat, sent = take_all(0.0, 100.0, 52)
    assert sent[:50] == [100.0] * 50
    assert sent[50] == pytest.approx(100.5)
    assert sent[51] == pytest.approx(101.0)
    # after a long pause the bucket is empty again
    assert gcra_take(tat, 10_000.0, 2.0, 50, slack=0.0) == (10_000.5, 0.0)


def test_gcra_take_takes_nothing_while_no_slot_is_free() -> None:
    tat, _ = take_all(0.0, 100.0, 50)
    assert gcra_take(tat, 100.2, 2.0, 50) == (tat, pytest.approx(0.3))
    assert gcra_wait(tat, 100.2, 2.0, 50) == pytest.approx(0.3)
    # the slack counts a request as arriving later: one slot's worth after an empty bucket, no more
    assert gcra_take(0.0, 100.0, 2.0, 50, slack=0.5)[0] == pytest.approx(101.0)
    assert gcra_take(110.0, 100.0, 2.0, 50, slack=0.5) == (110.5, 0.0)  # a busy bucket: no slack added


def test_gcra_wait_is_never_negative() -> None:
    assert gcra_wait(0.0, 100.0, 2.0, 50) == 0.0  # an idle bucket: at once, not "25 s ago"
    assert gcra_wait(90.0, 100.0, 2.0, 1) == 0.0


def test_gcra_full_makes_the_next_request_wait_one_interval() -> None:
    tat = gcra_full(0.0, 100.0, 2.0, 50)
    assert gcra_wait(tat, 100.0, 2.0, 50) == pytest.approx(0.5)
    assert gcra_full(1000.0, 100.0, 2.0, 50) == 1000.0  # never moves the bucket back


class _Bucket:
    """The portal's bucket as the docs describe it: +1 per request, leaks `rate`/s, max `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.level, self.at = rate, burst, 0.0, 0.0

    def level_at(self, t: float) -> float:
        return max(0.0, self.level - (t - self.at) * self.rate)

    def send(self, t: float) -> None:
        self.level, self.at = self.level_at(t) + 1, t


@settings(max_examples=300, deadline=None)
@given(
    rate=st.sampled_from([0.5, 2.0, 5.0, 7.3]),
    burst=st.integers(1, 60),
    steps=st.lists(
        st.tuples(st.floats(0, 3, allow_nan=False), st.floats(0, 1, allow_nan=False)), min_size=1, max_size=150
    ),
)
def test_gcra_take_never_overfills_the_portal_bucket(rate: float, burst: int, steps: list[tuple[float, float]]) -> None:
    """Slots taken at `now`, requests arriving anywhere in `[now, now + slack]` and so in any order
    (several processes): the portal, counting on arrival, never refuses one; and a wait is only
    asked for when the stored bucket is full."""
    slack = 0.5
    tat, now, arrivals = 0.0, 0.0, []
    for gap, delay in steps:
        now += gap
        while True:
            before = tat
            tat, wait = gcra_take(tat, now, rate, burst, slack)
            if wait == 0:
                break
            assert tat == before  # nothing taken
            assert (max(tat, now) - now) * rate + 1 > burst - 1e-6  # only when the stored counter is full
            now += wait
        arrivals.append(now + delay * slack)
    bucket = _Bucket(rate, burst)
    for at in sorted(arrivals):
        assert bucket.level_at(at) + 1 <= burst + 1e-6  # accepted
        bucket.send(at)


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, 50), (-1, 50), (float("nan"), 5), (float("inf"), 5), (2.0, 0), (2.0, -1), (2.0, 1.5), (True, 3), (2.0, True)],
)
def test_gcra_rejects_bad_settings(rate: float, burst: int) -> None:
    with pytest.raises(errors.ConfigError):
        gcra_take(0.0, 0.0, rate, burst)


def test_memory_limiter_is_thread_safe_and_per_portal() -> None:
    state = MemoryLimiterState()

    def worker() -> None:
        for _ in range(200):
            assert state.take("a", lambda: 0.0, 0.001, 10_000) == 0.0  # 1,600 < burst: all free now

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.tat("a") == pytest.approx(ARRIVAL_SLACK + 1600 * 1000.0)
    assert state.tat("b") == 0.0
    assert state.take("b", lambda: 0.0, 2.0, 50) == 0.0
    assert state.take("a", lambda: 0.0, 0.001, 1600) == pytest.approx(1000.0 + ARRIVAL_SLACK)
    state.backoff("b", 10.0, 2.0, 50)
    assert state.take("b", lambda: 10.0, 2.0, 50) == pytest.approx(0.5)


def test_memory_limiter_takes_are_atomic_when_the_math_is_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight threads taking at once: the free slots go to three of them and the others wait, none reads
    a tat another is about to move. The GCRA step is slowed so that threads would interleave between
    reading and storing the tat if `take` did not hold its lock across both (the GIL rarely shows it)."""
    real = limiter.gcra_take

    def slow(tat: float, now: float, rate: float, burst: int) -> tuple[float, float]:
        time.sleep(0.005)
        return real(tat, now, rate, burst)

    monkeypatch.setattr(limiter, "gcra_take", slow)
    state = MemoryLimiterState()
    barrier = threading.Barrier(8)
    waits: list[float] = []

    def worker() -> None:
        barrier.wait()
        waits.append(state.take("p", lambda: 100.0, 1.0, 4))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # with the slack, the fourth request at 100.0 would push the counter over 4: three slots are free
    assert state.tat("p") == pytest.approx(100.0 + ARRIVAL_SLACK + 3.0)
    assert sorted(waits) == pytest.approx([0.0] * 3 + [ARRIVAL_SLACK] * 5)


# -- error mapping -----------------------------------------------------------------------------------

SECTION_5_3 = [
    (401, "expired_token", errors.ExpiredToken),
    (401, "EXPIRED_TOKEN", errors.ExpiredToken),
    (401, "invalid_token", errors.InvalidToken),
    (401, "NO_AUTH_FOUND", errors.InvalidToken),
    (401, "insufficient_scope", errors.AccessDenied),
    (401, "authorization_error", errors.InvalidToken),
    (401, "APPLICATION_NOT_FOUND", errors.ApplicationError),
    (401, "CONNECTION_ERROR", errors.AuthError),
    (401, "user_access_error", errors.AccessDenied),
    (403, "user_access_error", errors.AccessDenied),
    (403, "ACCESS_DENIED", errors.AccessDenied),
    (401, "ACCESS_DENIED", errors.AccessDenied),
    (403, "INVALID_CREDENTIALS", errors.AccessDenied),
    (404, "ERROR_METHOD_NOT_FOUND", errors.MethodNotFound),
    (400, "INVALID_REQUEST", errors.MethodError),
    (400, "ERROR_BATCH_LENGTH_EXCEEDED", errors.BatchLimitError),
    (405, "ERROR_BATCH_METHOD_NOT_ALLOWED", errors.BatchLimitError),
    (429, "OPERATION_TIME_LIMIT", errors.OperationTimeLimit),
    (503, "QUERY_LIMIT_EXCEEDED", errors.QueryLimitExceeded),
    (503, "OVERLOAD_LIMIT", errors.ServerError),
    (500, "INTERNAL_SERVER_ERROR", errors.ServerError),
    (500, "ERROR_UNEXPECTED_ANSWER", errors.ServerError),
    (400, "invalid_grant", errors.InvalidGrant),
    (401, "invalid_client", errors.AuthError),
    (402, "PAYMENT_REQUIRED", errors.ApplicationError),
    # §1.7 registration errors and other method errors
    (400, "ERROR_ACTIVITY_VALIDATION_FAILURE", errors.MethodError),
    (400, "ERROR_UNSUPPORTED_PROTOCOL", errors.MethodError),
    (400, "ERROR_WRONG_HANDLER_URL", errors.MethodError),
    (400, "ERROR_ACTIVITY_ALREADY_INSTALLED", errors.MethodError),
    (400, "ERROR_ACTIVITY_ADD_FAILURE", errors.MethodError),
    (400, "ERROR_ACTIVITY_NOT_FOUND", errors.MethodError),
    (400, "ERROR_CORE", errors.MethodError),
    (400, "ERROR_EMPTY_LOG_MESSAGE", errors.MethodError),
    (400, "", errors.MethodError),
    (400, "404", errors.MethodError),
    # unknown codes fall back on the status
    (401, "SOMETHING_NEW", errors.AuthError),
    (403, "SOMETHING_NEW", errors.AccessDenied),
    (429, "SOMETHING_NEW", errors.QueryLimitExceeded),
    (502, "SOMETHING_NEW", errors.ServerError),
    (302, "SOMETHING_NEW", errors.TransportError),
    (None, "SOMETHING_NEW", errors.MethodError),
]


@pytest.mark.parametrize(("status", "code", "cls"), SECTION_5_3)
def test_map_error_classes(status: int | None, code: str, cls: type[errors.RestError]) -> None:
    exc = map_error(status, code, "why", method="crm.deal.add", portal="x.bitrix24.com")
    assert type(exc) is cls
    assert (exc.code, exc.description, exc.method, exc.portal, exc.status) == (
        code,
        "why",
        "crm.deal.add",
        "x.bitrix24.com",
        status,
    )
    assert "crm.deal.add on x.bitrix24.com" in str(exc)


def test_error_from_answer_shapes() -> None:
    exc = error_from_answer(429, {"error": "OPERATION_TIME_LIMIT", "error_description": "blocked"}, method="m")
    assert isinstance(exc, errors.OperationTimeLimit) and exc.reset_at is None
    exc = error_from_answer(429, {"error": "OPERATION_TIME_LIMIT", "time": {"operating_reset_at": 1700000600}})
    assert isinstance(exc, errors.OperationTimeLimit) and exc.reset_at == 1700000600.0
    exc = error_from_answer(502, None, text="<html><body>Bad   gateway</body></html>")
    assert isinstance(exc, errors.ServerError) and exc.code == "HTTP_502" and "Bad gateway" in exc.description
    exc = error_from_answer(400, {"error": 404, "error_description": "Workflow not found"})
    assert isinstance(exc, errors.MethodError) and exc.code == "404"


# -- PHP query encoding ---------------------------------------------------------------------------


def test_http_build_query_known_php_outputs() -> None:
    # Expected strings are what PHP 8 prints for http_build_query() of the same arrays.
    assert http_build_query({"a": "x y", "b": ["1", "2"]}) == "a=x+y&b%5B0%5D=1&b%5B1%5D=2"
    assert http_build_query({"t": True, "f": False, "n": None, "e": [], "i": 5}) == "t=1&f=0&i=5"
    assert http_build_query({"s": "a~b*c'd(é)"}) == "s=a%7Eb%2Ac%27d%28%C3%A9%29"
    assert http_build_query({"FIELDS": {"TITLE": "A&B=C", "OPP": 1.5}}) == (
        "FIELDS%5BTITLE%5D=A%26B%3DC&FIELDS%5BOPP%5D=1.5"
    )


@pytest.mark.parametrize("bad", [{"x": b"bytes"}, {"x": object()}, {"x": float("inf")}])
def test_http_build_query_refuses_unencodable(bad: dict[str, object]) -> None:
    with pytest.raises(TypeError, match=r"batch parameters: .*x"):
        http_build_query(bad)


_keys = st.text(st.characters(codec="utf-8", exclude_characters="[]"), min_size=1, max_size=6)
_leaf = st.one_of(st.text(max_size=8), st.integers(-1000, 1000))
_tree = st.recursive(
    _leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _tree, max_size=4))
def test_http_build_query_matches_qs_oracle(data: dict[str, object]) -> None:
    oracle = qs_codec.encode(data, EncodeOptions(format=Format.RFC1738, list_format=ListFormat.INDICES))
    # qs follows JavaScript encodeURIComponent and leaves these alone; PHP urlencode escapes them.
    for char in "~()*!'":
        oracle = oracle.replace(char, f"%{ord(char):02X}")
    assert http_build_query(data) == oracle
