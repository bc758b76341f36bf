"""The robot call and the app events, exactly, over HTTP into the running app: which bodies are refused
and how, how use_subscription and the auth block are read, what an uninstall leaves running, and which
licences are enterprise plans."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from b24robots import Params, Router, String
from b24robots.inbound.formcodec import encode_form
from b24robots.portal.install import is_enterprise
from b24robots.testing.app_fixtures import RobotHarness
from tests.test_pipeline_intake import body_for, post

router = Router()


class EchoIn(Params):
    text = String("Text", required=True)


class EchoOut(Params):
    text = String("Text", default="")


@router.robot("t.echo", name="Echo", inputs=EchoIn, outputs=EchoOut)
def echo(inputs: EchoIn) -> EchoOut:
    return EchoOut(text=inputs.text)


@pytest.fixture
async def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False, workers=False) as harness:
        await harness.install()
        yield harness


@pytest.mark.parametrize("path", ["/b24/robot", "/b24/events", "/b24/install"])
async def test_a_json_body_is_refused_with_a_reason(h: RobotHarness, path: str) -> None:
    async with h.client() as client:
        resp = await client.post(path, content=json.dumps(body_for(h)), headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "JSON" in resp.json()["reason"]
    assert h.svc.journal.recent() == []


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"event_token": ""}, "code and event_token are required"),
        ({"properties": "text=hi"}, "bracketed map"),
    ],
)
async def test_a_malformed_call_is_a_400_and_stores_nothing(h: RobotHarness, over: dict[str, Any], reason: str) -> None:
    status, body = await post(h, body_for(h, **over))
    assert status == 400 and reason in body["reason"]
    assert h.svc.journal.recent() == []


async def test_a_call_for_an_installation_needing_a_reinstall_is_refused(h: RobotHarness) -> None:
    h.svc.tokens.mark_needs_reinstall(h.portal.member_id, "the refresh token was refused")
    status, body = await post(h, body_for(h))
    assert status == 403 and "needs_reinstall" in body["reason"]
    assert h.svc.journal.recent() == []


@pytest.mark.parametrize(
    ("flag", "waits"), [("Y", True), ("y", True), ("N", False), ("n", False), (None, True), ("", True)]
)
async def test_use_subscription_is_no_only_for_n_in_any_case(h: RobotHarness, flag: str | None, waits: bool) -> None:
    body = body_for(h)
    if flag is None:
        del body["use_subscription"]
    else:
        body["use_subscription"] = flag
    status, answer = await post(h, body)
    assert (status, answer["status"]) == (200, "queued")
    assert h.svc.journal.get(answer["id"]).use_subscription is waits


async def test_the_run_as_user_and_their_token_are_kept_for_the_run(h: RobotHarness) -> None:
    body = body_for(h, auth_user_id="7", auth_access_token="u" * 32, auth_expires=str(int(time.time()) + 600))
    status, answer = await post(h, body)
    assert status == 200
    inv = h.svc.journal.get(answer["id"])
    assert inv.auth_user_id == 7
    token = h.svc.caller_tokens.load(inv.id, time.time())
    assert token is not None and token.user_id == 7 and token.access_token == "u" * 32


async def test_a_bad_input_notice_reaches_the_portal_without_waiting_for_the_poll(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        assert h.svc.sender is not None
        sender = h.svc.sender
        sender.poll = 60.0  # only a wake-up makes it look again within the test
        last = sender.last_loop
        deadline = time.monotonic() + 15
        while sender.last_loop == last and time.monotonic() < deadline:  # it now sleeps for the new poll
            await asyncio.sleep(0.05)
        assert sender.last_loop != last
        await asyncio.sleep(0.1)
        wf = await h.sim.start_robot(h.portal, "t.echo", properties_raw={"text": ""})
        await wf.closed(timeout=4)
        assert wf.closed_by == "event" and any("bad input" in e.message for e in wf.log)


async def test_an_uninstall_ends_what_still_runs_or_waits_there(h: RobotHarness) -> None:
    status, answer = await post(h, body_for(h))
    j = h.svc.journal
    (running,) = j.claim("W", 1, lease=600)
    assert status == 200 and running.id == answer["id"]
    await h.sim.uninstall_app(h.app, h.portal)
    inv = j.get(answer["id"])
    assert inv.state == "dead" and "uninstalled" in inv.error
    assert j.finish(inv.id, "W", outputs={}, log=[]) is False  # the run's result is dropped


async def test_onappinstall_without_an_application_token_is_refused(h: RobotHarness) -> None:
    auth = {
        "domain": h.portal.domain,
        "member_id": h.portal.member_id,
        "access_token": "a" * 32,
        "refresh_token": "r" * 32,
    }
    body = encode_form({"event": "ONAPPINSTALL", "data": {"LANGUAGE_ID": "en"}, "auth": auth})
    async with h.client() as client:
        resp = await client.post(
            "/b24/install", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
    assert resp.status_code == 400 and "application token" in resp.json()["reason"]


@pytest.mark.parametrize(
    ("info", "enterprise"),
    [
        ({"LICENSE_FAMILY": "ent"}, True),
        ({"LICENSE_TYPE": "ent250"}, True),
        ({"LICENSE_FAMILY": "ru_ent500"}, True),
        ({"LICENSE": "de_ent1000"}, True),
        ({"LICENSE_FAMILY": "project"}, False),
        ({"LICENSE_FAMILY": "ru_basic"}, False),
        ({}, False),
    ],
)
def test_enterprise_plans_are_recognised_in_every_region(info: dict[str, str], enterprise: bool) -> None:
    assert is_enterprise(info) is enterprise


async def test_a_token_of_another_application_on_the_same_portal_installs_nothing(h: RobotHarness) -> None:
    """The OAuth server vouches for the token, but for another app (its client_id): it is not our grant."""
    other = h.sim.register_app("Someone else's app", install_url="https://other.example.test/install")
    await h.sim.install_app(other, h.portal, notify=False)
    pair = h.sim.issue_tokens(other, h.portal)
    before = h.svc.installations.get(h.portal.member_id)
    frame = {"AUTH_ID": pair.access_token, "REFRESH_ID": pair.refresh_token, "member_id": h.portal.member_id}
    async with h.client() as client:
        resp = await client.post(
            f"/b24/install?DOMAIN={h.portal.domain}&PROTOCOL=1",
            content=encode_form(frame),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert resp.status_code == 403 and "another application" in resp.json()["reason"]
    assert h.svc.installations.get(h.portal.member_id).token_version == before.token_version


async def test_a_frame_naming_another_portals_domain_is_refused(h: RobotHarness) -> None:
    """Valid tokens of our app on portal B, sent as if from portal A's domain: the OAuth server knows
    the token's domain, and a claim that differs is refused rather than stored under either name."""
    evil = h.sim.add_portal("evil.example.test")
    await h.sim.install_app(h.app, evil, notify=False)
    pair = h.sim.issue_tokens(h.app, evil)
    frame = {"AUTH_ID": pair.access_token, "REFRESH_ID": pair.refresh_token, "member_id": evil.member_id}
    async with h.client() as client:
        resp = await client.post(
            f"/b24/install?DOMAIN={h.portal.domain}&PROTOCOL=1",
            content=encode_form(frame),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert resp.status_code == 403 and "domain does not match" in resp.json()["reason"]
    assert [i.member_id for i in h.svc.installations.all()] == [h.portal.member_id]
