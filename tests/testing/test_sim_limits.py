"""Request-rate leaky bucket (§5.1), operating-time limit (§5.2), envelopes (§5.3, §5.5)."""

from __future__ import annotations

from typing import Any

import httpx

from b24robots.testing import ManualClock, PortalSimulator

Env = Any


async def test_burst_then_refused_then_leaks(env: Env, clock: ManualClock) -> None:
    for _ in range(50):
        assert (await env.rest("profile")).status_code == 200
    refused = await env.rest("profile")
    assert refused.status_code == 503
    assert refused.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    clock.advance(1)  # leaks 2 per second
    assert (await env.rest("profile")).status_code == 200
    assert (await env.rest("profile")).status_code == 200
    assert (await env.rest("profile")).status_code == 503


async def test_per_portal_buckets_and_enterprise_limits(env: Env) -> None:
    big = env.sim.add_portal(rate=5, burst=250)
    await env.sim.install_app(env.app, big, notify=False)
    token = env.sim.issue_tokens(env.app, big).access_token
    env.sim.fill_bucket(env.portal)
    assert (await env.rest("profile")).status_code == 503
    for _ in range(250):
        assert (await env.rest("profile", token=token)).status_code == 200
    assert (await env.rest("profile", token=token)).status_code == 503


async def test_batch_counts_as_one_request(env: Env) -> None:
    for _ in range(49):
        await env.rest("profile")
    cmd = {f"c{i}": "profile" for i in range(50)}
    response = await env.rest("batch", {"cmd": cmd})
    assert response.status_code == 200 and len(response.json()["result"]["result"]) == 50
    assert (await env.rest("profile")).status_code == 503


async def test_success_has_time_block_errors_do_not(env: Env) -> None:
    body = (await env.rest("profile")).json()
    assert set(body["time"]) == {"start", "finish", "duration", "processing", "date_start", "date_finish"}
    assert body["time"]["date_start"].endswith("+00:00")
    error = (await env.rest("no.such.method")).json()
    assert error == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


async def test_unknown_method_is_404(env: Env) -> None:
    response = await env.rest("no.such.method")
    assert response.status_code == 404


async def test_insufficient_scope(env: Env) -> None:
    narrow = env.sim.register_app("Narrow", scopes=["bizproc"])
    await env.sim.install_app(narrow, env.portal, notify=False)
    token = env.sim.issue_tokens(narrow, env.portal).access_token
    response = await env.rest("crm.deal.get", {"id": 1}, token=token)
    assert response.status_code == 401 and response.json()["error"] == "insufficient_scope"


async def test_operating_time_limit() -> None:
    clock = ManualClock()
    sim = PortalSimulator(clock=clock, operating_time_limit=420, method_costs={"crm.deal.list": 100})
    portal = sim.add_portal()
    app = sim.register_app()
    await sim.install_app(app, portal, notify=False)
    token = sim.issue_tokens(app, portal).access_token
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=sim.base_url) as client:

        async def call(method: str) -> httpx.Response:
            return await client.post(f"/rest/{method}", json={"auth": token})

        for n in range(5):  # 5 x 100 s: the fifth pushes the total over 420
            response = await call("crm.deal.list")
            assert response.status_code == 200
            assert response.json()["time"]["operating"] >= 100 * (n + 1)
        reset_at = response.json()["time"]["operating_reset_at"]
        blocked = await call("crm.deal.list")
        assert blocked.status_code == 429
        assert blocked.json()["error"] == "OPERATION_TIME_LIMIT"
        assert blocked.json()["error_description"] == "Method is blocked due to operation time limit."
        assert blocked.json()["time"]["operating_reset_at"] == reset_at == int(clock.now()) + 600
        assert (await call("crm.deal.get")).status_code != 429  # per method
        clock.advance(601)
        assert (await call("crm.deal.list")).status_code == 200
