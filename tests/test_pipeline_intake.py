"""The robot handler: verification, dedupe, bad input, retries, timeouts, health, metrics (fuzz: test_never_500)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from b24robots import Int, Params, RobotContext, Router, String
from b24robots.inbound.formcodec import encode_form
from b24robots.jobs.runner import RetryRules
from b24robots.robots.signals import Retry
from b24robots.store.retention import database_size
from b24robots.testing.app_fixtures import RobotHarness

router = Router()
calls: dict[str, int] = {}


class EchoIn(Params):
    text = String("Text", required=True)


class EchoOut(Params):
    text = String("Text", default="")


@router.robot("t.echo", name="Echo", inputs=EchoIn, outputs=EchoOut)
def echo(inputs: EchoIn) -> EchoOut:
    calls["echo"] = calls.get("echo", 0) + 1
    return EchoOut(text=inputs.text)


class CountOut(Params):
    n = Int("N", default=-1)


@router.robot("t.flaky", name="Flaky", outputs=CountOut)
def flaky(ctx: RobotContext) -> CountOut:
    calls["flaky"] = calls.get("flaky", 0) + 1
    if ctx.attempt < 3:
        raise ConnectionError("the ERP is down")
    return CountOut(n=ctx.attempt)


@router.robot("t.broken", name="Broken", outputs=CountOut)
def broken() -> CountOut:
    raise ZeroDivisionError("bad math")


@router.robot("t.later", name="Asks to retry", outputs=CountOut)
async def later(ctx: RobotContext) -> CountOut:
    if ctx.attempt == 1:
        raise Retry(delay=0.05)
    return CountOut(n=ctx.attempt)


@router.robot("t.slow", name="Slow", outputs=CountOut)
async def slow() -> CountOut:
    await asyncio.sleep(2.5)
    return CountOut(n=1)


@pytest.fixture
async def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    calls.clear()
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as harness:
        harness.svc.runner.rules = RetryRules(max_attempts=3, base_delay=0.01, max_delay=0.02)
        await harness.install()
        yield harness


def body_for(h: RobotHarness, **over: Any) -> dict[str, Any]:
    """A handler body shaped like the portal's, for a robot we never started on the simulator."""
    inst = h.svc.installations.get(h.portal.member_id)
    pinst = h.portal.installations[h.app.client_id]
    body: dict[str, Any] = {
        "workflow_id": "681c894d3f0ec8.54818143",
        "code": "t.echo",
        "document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"],
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
        "event_token": "681c894d3f0ec8.54818143|A1_2_3_4|abc.def",
        "properties": {"text": "hi"},
        "use_subscription": "Y",
        "timeout_duration": "0",
        "ts": "1746700621",
        "auth": {
            "access_token": "x" * 32,
            "domain": inst.domain,
            "member_id": inst.member_id,
            "application_token": pinst.application_token,
            "client_endpoint": inst.client_endpoint,
            "server_endpoint": inst.server_endpoint,
            "expires": "1",
            "expires_in": "3600",
            "scope": "bizproc",
            "status": "L",
            "user_id": "1",
            "refresh_token": "y" * 32,
        },
    }
    for key, value in over.items():
        if key.startswith("auth_"):
            body["auth"][key[5:]] = value
        else:
            body[key] = value
    return body


async def post(h: RobotHarness, body: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else encode_form(body)
    async with h.client() as client:
        resp = await client.post(
            "/b24/robot", content=raw, headers={"content-type": "application/x-www-form-urlencoded"}
        )
    return resp.status_code, resp.json()


async def test_duplicate_delivery_is_stored_and_run_once(h: RobotHarness) -> None:
    wf = await h.run_robot("t.echo", properties={"text": "once"})
    assert wf.return_values["text"] == "once"
    # the same delivery again (the queue's body, byte for byte)
    assert wf.delivery is not None
    status, body = await post(h, wf.delivery.body)
    assert (status, body["status"]) == (200, "duplicate")
    await h.until_idle()
    assert calls["echo"] == 1
    assert len(h.svc.journal.recent(robot="t.echo")) == 1


@pytest.mark.parametrize(
    ("over", "status", "reason"),
    [
        ({"auth_member_id": "0" * 32}, 401, "unknown portal"),
        ({"auth_application_token": "f" * 32}, 403, "does not match"),
        ({"auth": "nope"}, 401, "no auth block"),
        ({"code": ""}, 400, "code and event_token"),
    ],
)
async def test_spoofed_or_malformed_requests_store_nothing(
    h: RobotHarness, over: dict[str, Any], status: int, reason: str
) -> None:
    before = len(h.sim.calls)
    got, body = await post(h, body_for(h, **over))
    assert got == status and reason in body["reason"]
    await asyncio.sleep(0.05)
    assert h.svc.journal.recent() == []
    assert len(h.sim.calls) == before  # nothing was called on the portal


async def test_bad_form_body_is_a_400_with_reason(h: RobotHarness) -> None:
    status, body = await post(h, b"a" + b"[x]" * 50 + b"=1")
    assert status == 400 and "depth" in body["reason"]
    status, body = await post(h, b"%ff%fe=1")
    assert status == 400 and body["reason"]


async def test_unknown_robot_is_journaled_and_answered(h: RobotHarness) -> None:
    status, body = await post(h, body_for(h, code="not.declared"))
    assert (status, body["status"]) == (200, "rejected")
    inv = h.svc.journal.get(body["id"])
    assert inv.state == "dead" and "not.declared" in inv.error


async def test_exceptions_retry_with_backoff_then_succeed(h: RobotHarness) -> None:
    wf = await h.run_robot("t.flaky")
    assert str(wf.return_values["n"]) == "3"
    inv = h.svc.journal.recent(robot="t.flaky")[0]
    assert inv.state == "delivered" and inv.attempts == 3 and calls["flaky"] == 3


async def test_unhandled_exception_goes_dead_with_traceback_and_a_portal_message(h: RobotHarness) -> None:
    wf = await h.run_robot("t.broken")
    assert str(wf.return_values["n"]) == "-1"  # the outputs' defaults
    assert any("ZeroDivisionError" in e.message for e in wf.log)
    inv = h.svc.journal.recent(robot="t.broken")[0]
    assert inv.state == "dead" and inv.attempts == 3
    assert "Traceback" in inv.error and "bad math" in inv.error


async def test_retry_signal(h: RobotHarness) -> None:
    wf = await h.run_robot("t.later")
    assert str(wf.return_values["n"]) == "2"


async def test_never_answer_after_the_timeout(h: RobotHarness) -> None:
    wf = await h.sim.start_robot(h.portal, "t.slow", timeout_duration=1)
    await wf.closed(timeout=10)
    await h.until_idle()
    assert wf.closed_by == "timeout" and wf.is_timeout
    inv = h.svc.journal.recent(robot="t.slow")[0]
    assert inv.state == "dead" and inv.delivered_at is None and "timeout" in inv.error
    assert not [c for c in h.sim.calls if c.method == "batch"]


async def test_a_failing_robot_tells_the_portal_before_its_timeout(h: RobotHarness) -> None:
    h.svc.runner.rules = RetryRules(max_attempts=50, base_delay=1.0, max_delay=1.0)
    wf = await h.sim.start_robot(h.portal, "t.broken", timeout_duration=4)
    await wf.closed(timeout=10)
    assert wf.closed_by == "event"
    assert any("timeout" in e.message for e in wf.log)


async def test_healthz_and_metrics(h: RobotHarness) -> None:
    await h.run_robot("t.echo", properties={"text": "m"})
    h.svc.settings.metrics_token = SecretStr("scrape-me")
    h.svc.settings.health_token = SecretStr("look-inside")
    async with h.client() as client:
        health = await client.get("/healthz", headers={"Authorization": "Bearer look-inside"})
        metrics = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert health.status_code == 200 and health.json()["checks"]["worker"] is True
    text = metrics.text
    assert 'b24robots_invocations{robot="t.echo",state="delivered"} 1.0' in text
    assert "b24robots_ack_seconds_bucket" in text and "b24robots_run_seconds_count" in text
    assert "b24robots_queue_depth" in text and "b24robots_answers_delivered_total 1.0" in text
    size = [line for line in text.splitlines() if line.startswith("b24robots_database_bytes ")]
    assert len(size) == 1 and 10_000 < float(size[0].split()[1]) == database_size(h.svc.db)
