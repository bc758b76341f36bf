"""RestClient against an in-process fake portal (httpx.MockTransport): calls, tokens, retries, batch."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

import httpx
import pytest
from rest_fakes import CLIENT_ID, CLIENT_SECRET, FakePortal, Fault, SimClock

from b24robots import errors
from b24robots.rest import (
    AppCredentials,
    MemoryLimiterState,
    MemoryTokenStore,
    RestClient,
    RetryPolicy,
    TokenPair,
    is_idempotent,
    redact,
)

FAST = RetryPolicy(attempts=4, timeout=5.0, wait_initial=0.001, wait_max=0.002, wait_jitter=0.0)


class Env:
    def __init__(
        self,
        *,
        retry: RetryPolicy = FAST,
        allow_http: bool = False,
        scheme: str = "https",
        secret: str = CLIENT_SECRET,
    ) -> None:
        self.clock = SimClock()
        self.portal = FakePortal(self.clock, scheme=scheme)
        self.store = MemoryTokenStore()
        self.pair = self.portal.issue()
        self.store.put("p1", self.pair)
        self.limiter = MemoryLimiterState()
        self.client = RestClient(
            self.store,
            app=AppCredentials(CLIENT_ID, secret),
            limiter=self.limiter,
            transport=self.portal.transport(),
            retry=retry,
            allow_http=allow_http,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.portal.portal_requests if m == method)


@pytest.fixture
async def env() -> Any:
    e = Env()
    yield e
    await e.client.aclose()


# -- plain calls ------------------------------------------------------------------------------------


async def test_call_posts_json_with_auth_to_client_endpoint(env: Env) -> None:
    result = await env.client.call("p1", "echo", {"FIELDS": {"TITLE": "Deal ü"}, "n": 1})
    assert result == {"FIELDS": {"TITLE": "Deal ü"}, "n": 1}
    request = env.portal.requests[-1]
    assert request.method == "POST"
    assert str(request.url) == "https://example.bitrix24.com/rest/echo"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content)["auth"] == env.pair.access_token
    assert env.pair.access_token not in str(request.url)


async def test_an_auth_parameter_from_the_caller_never_replaces_the_access_token(env: Env) -> None:
    """Robot code passes params through; an `auth` among them must not choose the token the call carries."""
    result = await env.client.call("p1", "echo", {"auth": "someone-elses-token", "n": 1})
    sent = json.loads(env.portal.requests[-1].content)
    assert sent["auth"] == env.pair.access_token
    assert "someone-elses-token" not in env.portal.requests[-1].content.decode()
    assert result["n"] == 1


async def test_call_envelope_has_paging_and_time(env: Env) -> None:
    envelope = await env.client.call_envelope("p1", "crm.deal.list", {"start": 50})
    assert [i["ID"] for i in envelope.result][:2] == ["51", "52"]
    assert envelope.next == 100
    assert envelope.total == 120
    assert envelope.time is not None and "duration" in envelope.time


async def test_list_all_follows_next(env: Env) -> None:
    ids = [item["ID"] async for item in env.client.list_all("p1", "crm.deal.list", {"select": ["ID"]})]
    assert ids == [str(i) for i in range(1, 121)]
    starts = [body["start"] for m, body in env.portal.portal_requests if m == "crm.deal.list"]
    assert starts == [0, 50, 100]


@pytest.mark.parametrize("stuck", [0, 50])
async def test_list_all_refuses_a_next_that_does_not_advance(env: Env, stuck: int) -> None:
    """A `next` at or behind the page's own start would page forever: the portal's answer is an error."""
    if stuck:
        env.portal.faults.append(Fault(200, {"result": [{"ID": "1"}], "next": 50, "total": 120}, "crm.deal.list"))
    env.portal.faults.append(Fault(200, {"result": [{"ID": "2"}], "next": stuck, "total": 120}, "crm.deal.list"))
    with pytest.raises(errors.ServerError, match="paging did not advance"):
        _ = [item async for item in env.client.list_all("p1", "crm.deal.list")]
    assert env.count("crm.deal.list") == (2 if stuck else 1)


async def test_list_all_unwraps_items_shape(env: Env) -> None:
    portal = env.client.for_portal("p1")
    ids = [item["ID"] async for item in portal.list_all("crm.item.list", {"entityTypeId": 2})]
    assert len(ids) == 120 and ids[-1] == "120"


async def test_portal_client_is_bound(env: Env) -> None:
    portal = env.client.for_portal("p1")
    assert await portal.call("echo", {"a": 1}) == {"a": 1}
    assert (await portal.call_envelope("crm.deal.list")).next == 50
    assert (await portal.batch([("echo", {"x": "1"})])).result(0) == {"x": "1"}


async def test_method_error_carries_method_and_domain(env: Env) -> None:
    with pytest.raises(errors.MethodError) as info:
        await env.client.call("p1", "fail", {"n": 7})
    assert info.value.code == "ERROR_CORE"
    assert info.value.method == "fail"
    assert info.value.portal == "example.bitrix24.com"
    assert info.value.status == 400
    assert "failed 7" in str(info.value)


@pytest.mark.parametrize("name", ["", "../admin", "crm.deal.list?x=1", "a b", "/abs"])
async def test_bad_method_name_is_refused_before_sending(env: Env, name: str) -> None:
    with pytest.raises(errors.MethodError, match="INVALID_METHOD_NAME"):
        await env.client.call("p1", name)
    assert env.portal.requests == []


async def test_unserialisable_params_give_typed_error(env: Env) -> None:
    with pytest.raises(errors.MethodError, match="INVALID_PARAMS"):
        await env.client.call("p1", "echo", {"x": object()})
    with pytest.raises(errors.MethodError, match="INVALID_PARAMS"):
        await env.client.call("p1", "echo", ["not", "a", "mapping"])  # type: ignore[arg-type]


async def test_unknown_portal_is_store_not_found(env: Env) -> None:
    with pytest.raises(errors.NotFound):
        await env.client.call("nope", "echo")


async def test_plain_http_refused_unless_allowed() -> None:
    e = Env(scheme="http")
    with pytest.raises(errors.ConfigError, match="allow_http=True"):
        await e.client.call("p1", "echo")
    assert e.portal.requests == []
    await e.client.aclose()
    ok = Env(scheme="http", allow_http=True)
    assert await ok.client.call("p1", "echo", {"a": 1}) == {"a": 1}
    await ok.client.aclose()


async def test_non_json_5xx_becomes_server_error() -> None:
    env = Env(retry=RetryPolicy.disabled())
    env.portal.faults.append(Fault(status=502, body=None))
    with pytest.raises(errors.ServerError) as info:
        await env.client.call("p1", "crm.deal.add")
    assert info.value.code == "HTTP_502"


# -- token refresh ---------------------------------------------------------------------------------


async def test_expired_token_refreshes_persists_then_replays(env: Env) -> None:
    env.portal.expire_all()
    env.portal.token_store = env.store
    assert await env.client.call("p1", "echo", {"a": 1}) == {"a": 1}
    stored = env.store.load("p1")
    assert stored.version == 2
    assert stored.access_token != env.pair.access_token
    assert stored.refresh_token != env.pair.refresh_token
    assert stored.domain == "example.bitrix24.com"  # not the OAuth server's "domain"
    assert stored.expires_at == int(env.clock()) + 3600
    # the replay reached the portal only after the new pair was stored
    assert env.portal.store_at_replay == [2]
    query = env.portal.refresh_requests[0]
    assert query == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": env.pair.refresh_token,
    }
    assert env.portal.requests[1].method == "GET"
    assert str(env.portal.requests[1].url).startswith("https://oauth.bitrix.info/oauth/token/?")


async def test_expired_token_code_is_case_insensitive(env: Env) -> None:
    env.portal.faults.append(
        Fault(
            status=401,
            body={"error": "EXPIRED_TOKEN", "error_description": "The access token provided has expired"},
        )
    )
    assert await env.client.call("p1", "echo", {"a": 2}) == {"a": 2}
    assert env.client.refreshes == 1


async def test_twenty_concurrent_callers_one_refresh(env: Env) -> None:
    env.portal.expire_all()
    env.portal.refresh_delay = 0.02
    results = await asyncio.gather(*(env.client.call("p1", "echo", {"i": i}) for i in range(20)))
    assert results == [{"i": i} for i in range(20)]
    assert len(env.portal.refresh_requests) == 1
    assert env.client.refreshes == 1
    assert env.store.load("p1").version == 2


async def test_cas_loser_uses_the_winners_pair(env: Env) -> None:
    """Another process refreshes while our refresh is in flight: our swap fails, we adopt theirs."""
    env.portal.expire_all()
    winner = replace(env.portal.issue(version=2))

    def other_process_wins() -> None:
        env.store.put("p1", winner)

    env.portal.on_refresh = other_process_wins
    assert await env.client.call("p1", "echo", {"a": 3}) == {"a": 3}
    assert env.client.refreshes == 0
    assert env.store.load("p1") == winner
    last_body = env.portal.portal_requests[-1][1]
    assert last_body["auth"] == winner.access_token


async def test_invalid_grant_marks_reinstall(env: Env) -> None:
    env.portal.expire_all()
    env.portal.refresh.clear()  # the refresh token is no longer valid
    with pytest.raises(errors.InvalidGrant) as info:
        await env.client.call("p1", "echo")
    assert "re-install" in str(info.value)
    assert info.value.portal == "example.bitrix24.com"
    assert "p1" in env.store.needs_reinstall
    assert "re-install" in env.store.needs_reinstall["p1"]
    assert env.store.load("p1").version == 1


async def test_refresh_without_app_credentials_is_config_error(env: Env) -> None:
    env.portal.expire_all()
    bare = RestClient(env.store, transport=env.portal.transport(), clock=env.clock, sleep=env.clock.sleep)
    with pytest.raises(errors.ConfigError, match="AppCredentials"):
        await bare.call("p1", "echo")
    await bare.aclose()


async def test_wrong_app_secret_is_auth_error() -> None:
    env = Env(secret="wrong")
    env.portal.expire_all()
    with pytest.raises(errors.AuthError) as info:
        await env.client.call("p1", "echo")
    assert info.value.code == "invalid_client"
    assert env.store.needs_reinstall == {}


async def test_tokens_and_secret_never_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env.portal.expire_all()
    await env.client.call("p1", "echo")
    new = env.store.load("p1")
    text = caplog.text
    assert "oauth/token" in text  # httpx did log the refresh request ...
    for secret in (
        env.pair.access_token,
        env.pair.refresh_token,
        new.access_token,
        new.refresh_token,
        CLIENT_SECRET,
    ):
        assert secret not in text  # ... but with its secrets masked
    assert redact(new.access_token) in text


def test_redact_and_repr() -> None:
    assert redact("5d971c6800782a4e") == "5d97…"
    assert redact("") == "∅"
    pair = TokenPair("access-secret-1", "refresh-secret-2", 0.0, 1, "https://x/rest/", "https://o/rest/", "x", "m")
    assert "access-secret-1" not in repr(pair) and "refresh-secret-2" not in repr(pair)
    assert "secret-value" not in repr(AppCredentials("id", "secret-value"))


# -- redirects ---------------------------------------------------------------------------------------


async def test_redirect_to_new_domain_is_followed_once_and_stored(env: Env) -> None:
    env.portal.moved_to = "new.bitrix24.com"
    assert await env.client.call("p1", "echo", {"a": 1}) == {"a": 1}
    stored = env.store.load("p1")
    assert stored.client_endpoint == "https://new.bitrix24.com/rest/"
    assert stored.domain == "new.bitrix24.com"
    hosts = [r.url.host for r in env.portal.requests]
    assert hosts == ["example.bitrix24.com", "new.bitrix24.com"]
    await env.client.call("p1", "echo")
    assert env.portal.requests[-1].url.host == "new.bitrix24.com"


async def test_second_redirect_is_an_error(env: Env) -> None:
    env.portal.faults.extend([Fault(302, headers={"Location": "https://a.bitrix24.com/rest/echo"})] * 2)
    with pytest.raises(errors.TransportError, match="TOO_MANY_REDIRECTS"):
        await env.client.call("p1", "echo")


async def test_redirect_to_plain_http_is_refused(env: Env) -> None:
    env.portal.faults.append(Fault(302, headers={"Location": "http://evil.example.com/rest/echo"}))
    with pytest.raises(errors.ConfigError, match="plain http"):
        await env.client.call("p1", "echo")
    assert env.store.load("p1").client_endpoint == "https://example.bitrix24.com/rest/"


async def test_redirect_to_a_url_that_does_not_split_is_a_transport_error(env: Env) -> None:
    # urljoin/urlsplit raise ValueError for "https://[/": the client answers its own error instead
    for location in ("https://[/rest/echo", "https://a.bitrix24.com:99999/rest/echo"):
        env.portal.faults.append(Fault(302, headers={"Location": location}))
        with pytest.raises(errors.TransportError, match="BAD_REDIRECT"):
            await env.client.call("p1", "echo")
    assert env.store.load("p1").client_endpoint == "https://example.bitrix24.com/rest/"


# -- retry rules ------------------------------------------------------------------------------------


def _limit() -> Fault:
    return Fault(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})


async def test_query_limit_is_retried_even_for_writes(env: Env) -> None:
    env.portal.faults.extend([_limit(), _limit()])
    assert await env.client.call("p1", "crm.deal.add", {"fields": {}}) is True
    assert env.count("crm.deal.add") == 3


async def test_query_limit_retries_are_bounded(env: Env) -> None:
    env.portal.faults.extend([_limit()] * 10)
    with pytest.raises(errors.QueryLimitExceeded):
        await env.client.call("p1", "crm.deal.add")
    assert env.count("crm.deal.add") == FAST.attempts


async def test_disabled_policy_does_not_retry() -> None:
    env = Env(retry=RetryPolicy.disabled())
    env.portal.faults.append(_limit())
    with pytest.raises(errors.QueryLimitExceeded):
        await env.client.call("p1", "crm.deal.get")
    assert env.count("crm.deal.get") == 1


@pytest.mark.parametrize(
    ("method", "idempotent", "expected_requests", "succeeds"),
    [
        ("crm.deal.get", None, 2, True),
        ("crm.deal.list", None, 2, True),
        ("bizproc.event.send", None, 2, True),
        ("bizproc.activity.log", None, 2, True),
        ("app.info", None, 2, True),
        ("crm.deal.add", None, 1, False),
        ("bizproc.robot.add", None, 1, False),
        ("crm.deal.add", True, 2, True),
        ("crm.deal.get", False, 1, False),
    ],
)
async def test_5xx_retried_only_for_idempotent(
    env: Env, method: str, idempotent: bool | None, expected_requests: int, succeeds: bool
) -> None:
    env.portal.faults.append(Fault(500, {"error": "INTERNAL_SERVER_ERROR", "error_description": ""}))
    if succeeds:
        await env.client.call("p1", method, idempotent=idempotent)
    else:
        with pytest.raises(errors.ServerError):
            await env.client.call("p1", method, idempotent=idempotent)
    assert env.count(method) == expected_requests


@pytest.mark.parametrize(
    ("exc", "code"),
    [(httpx.ReadTimeout("slow"), "TIMEOUT"), (httpx.ConnectError("refused"), "CONNECTION_FAILED")],
)
async def test_transport_errors_retried_only_for_idempotent(env: Env, exc: Exception, code: str) -> None:
    env.portal.faults.append(Fault(raise_exc=exc))
    assert await env.client.call("p1", "bizproc.event.send", {"EVENT_TOKEN": "t"}) is True
    assert env.count("bizproc.event.send") == 2
    env.portal.faults.append(Fault(raise_exc=exc))
    with pytest.raises(errors.TransportError) as info:
        await env.client.call("p1", "crm.deal.update")
    assert info.value.code == code
    assert info.value.method == "crm.deal.update"
    assert env.count("crm.deal.update") == 1


async def test_batch_retry_depends_on_every_command(env: Env) -> None:
    env.portal.faults.append(Fault(502, {"error": "ERROR_UNEXPECTED_ANSWER", "error_description": ""}))
    sends = [("bizproc.event.send", {"EVENT_TOKEN": f"t{i}"}) for i in range(3)]
    result = await env.client.batch("p1", sends)
    assert result.ok and env.count("batch") == 2
    env.portal.faults.append(Fault(502, {"error": "ERROR_UNEXPECTED_ANSWER", "error_description": ""}))
    with pytest.raises(errors.ServerError):
        await env.client.batch("p1", [*sends, ("crm.deal.add", {"fields": {"TITLE": "x"}})])
    assert env.count("batch") == 3


def test_is_idempotent_rules() -> None:
    assert is_idempotent("CRM.DEAL.LIST") and is_idempotent("profile") and is_idempotent("user.get")
    assert not is_idempotent("crm.deal.add") and not is_idempotent("bizproc.robot.add")
    assert is_idempotent("batch", {"cmd": {"a": "bizproc.event.send?EVENT_TOKEN=x", "b": "crm.deal.get?id=1"}})
    assert not is_idempotent("batch", {"cmd": ["crm.deal.get", "crm.deal.delete?id=1"]})
    assert not is_idempotent("batch", {"cmd": {}})


async def test_operation_time_limit_waits_for_reset(env: Env) -> None:
    env.portal.operating_reset_at = env.clock() + 20
    await env.client.call("p1", "crm.deal.add")  # learns operating_reset_at for this method
    env.portal.faults.append(
        Fault(
            429,
            {
                "error": "OPERATION_TIME_LIMIT",
                "error_description": "Method is blocked due to operation time limit.",
            },
        )
    )
    before = env.clock()
    assert await env.client.call("p1", "crm.deal.add") is True
    assert env.clock() - before == pytest.approx(20, abs=0.1)
    assert env.count("crm.deal.add") == 3


async def test_operation_time_limit_beyond_max_wait_raises(env: Env) -> None:
    env.portal.operating_reset_at = env.clock() + 500
    await env.client.call("p1", "crm.deal.add")
    env.portal.faults.append(Fault(429, {"error": "OPERATION_TIME_LIMIT", "error_description": "blocked"}))
    before = env.clock()
    with pytest.raises(errors.OperationTimeLimit) as info:
        await env.client.call("p1", "crm.deal.add")
    assert info.value.reset_at == env.portal.operating_reset_at
    assert env.clock() == before


async def test_operation_time_limit_unknown_reset_raises(env: Env) -> None:
    env.portal.faults.append(Fault(429, {"error": "OPERATION_TIME_LIMIT", "error_description": "blocked"}))
    with pytest.raises(errors.OperationTimeLimit) as info:
        await env.client.call("p1", "crm.deal.add")
    assert info.value.reset_at is None and info.value.status == 429


# -- limiter ------------------------------------------------------------------------------------------


async def test_sixty_seconds_at_two_per_second_no_503(env: Env) -> None:
    """170 calls: a full burst of 50 then 2/s for 60 simulated seconds — the portal never refuses.
    The first request after the empty bucket counts ARRIVAL_SLACK (0.5 s) more: 60.5 s."""
    start = env.clock()
    for i in range(170):
        await env.client.call("p1", "echo", {"i": i})
    assert env.portal.refused_503 == 0
    assert env.clock() - start == pytest.approx(60.5, abs=0.1)


async def test_concurrent_callers_get_distinct_slots(env: Env) -> None:
    """80 callers at one instant: 49 go at once (ARRIVAL_SLACK costs one slot at 2/s after an empty
    bucket), the other 31 wait for a slot each (a waiter takes
    nothing, so when several wake for one slot the losers wait again) and the portal refuses none."""
    sent: list[float] = []
    take = env.limiter.take

    def recording_take(*args: Any) -> float:
        wait = take(*args)
        if wait == 0:
            sent.append(env.clock())
        return wait

    env.limiter.take = recording_take  # type: ignore[method-assign]
    await asyncio.gather(*(env.client.call("p1", "echo", {"i": i}) for i in range(80)))
    assert len(env.portal.portal_requests) == 80 and env.portal.refused_503 == 0
    assert len(sent) == 80 and sent[:49] == [sent[0]] * 49 and sent[49] > sent[0]


async def test_per_portal_rate_is_settable(env: Env) -> None:
    env.client.set_rate("p1", 5.0, 250)
    env.portal.rate, env.portal.burst = 5.0, 250
    for i in range(260):
        await env.client.call("p1", "echo", {"i": i})
    assert env.portal.refused_503 == 0
    assert env.clock() - 1_750_000_000.0 == pytest.approx(2.0 + 0.5, abs=0.1)  # + ARRIVAL_SLACK
    with pytest.raises(errors.ConfigError):
        env.client.set_rate("p1", 0, 10)
