"""Fault injection through the Python API and the JSON API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

Env = Any
Robot = Callable[..., dict[str, Any]]


async def test_delay(env: Env) -> None:
    env.sim.faults.delay(1.0, count=1, method="profile")
    started = time.perf_counter()
    assert (await env.rest("profile")).status_code == 200
    assert time.perf_counter() - started >= 1.0
    started = time.perf_counter()
    await env.rest("profile")  # count=1: the second call is not delayed
    assert time.perf_counter() - started < 1.0


async def test_fail_next_does_not_execute(env: Env, robot: Robot) -> None:
    env.sim.faults.fail_next(2, status=502, error="INTERNAL_SERVER_ERROR", description="Bad gateway")
    for _ in range(2):
        response = await env.rest("bizproc.robot.add", robot())
        assert response.status_code == 502
        assert response.json() == {"error": "INTERNAL_SERVER_ERROR", "error_description": "Bad gateway"}
    assert env.portal.registrations == {}
    assert (await env.rest("bizproc.robot.add", robot())).status_code == 200


async def test_faults_can_target_one_portal(env: Env) -> None:
    other = env.sim.add_portal()
    await env.sim.install_app(env.app, other, notify=False)
    token = env.sim.issue_tokens(env.app, other).access_token
    env.sim.faults.fail_next(1, portal=other.domain)
    assert (await env.rest("profile")).status_code == 200
    assert (await env.rest("profile", token=token)).status_code == 500


async def test_drop_connection_in_process(env: Env) -> None:
    env.sim.faults.drop_next(1)
    with pytest.raises(httpx.TransportError):
        await env.rest("profile")
    assert (await env.rest("profile")).status_code == 200
    assert [c.error for c in env.sim.calls][-2:] == ["dropped", None]


async def test_failed_delivery_leaves_the_robot_waiting(env: Env, robot: Robot, receiver: Any) -> None:
    await env.ok("bizproc.robot.add", robot())
    env.sim.faults.fail_deliveries(1)
    lost = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"})
    assert receiver.at("/robot") == [] and lost.state == "waiting"
    assert lost.delivery.status_code is None and "could not reach the handler" in lost.delivery.error
    delivered = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "2"})
    assert len(receiver.at("/robot")) == 1 and delivered.delivery.ok


async def test_json_api_faults(env: Env) -> None:
    api = env.client
    assert (await api.post("/sim/api/faults", json={"kind": "fail", "count": 1, "status": 503})).status_code == 200
    assert (await env.rest("profile")).status_code == 503
    assert (
        await api.post("/sim/api/faults", json={"kind": "fill_bucket", "portal": env.portal.domain})
    ).status_code == 200
    assert (await env.rest("profile")).json()["error"] == "QUERY_LIMIT_EXCEEDED"
    expired = await api.post("/sim/api/faults", json={"kind": "expire_tokens"})
    assert expired.json()["expired"] >= 2
    await api.post("/sim/api/faults", json={"kind": "fail_deliveries", "count": 3})
    state = (await api.get("/sim/api/faults")).json()
    assert state["delivery_failures"] == [{"remaining": 3, "domain": None}]
    assert (await api.delete("/sim/api/faults")).json()["delivery_failures"] == []
    bad = await api.post("/sim/api/faults", json={"kind": "meteor"})
    assert bad.status_code == 400 and "kind must be one of" in bad.json()["error"]
