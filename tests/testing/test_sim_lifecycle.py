"""App install / update / uninstall (§4.2, §1.1) and CRM automation triggers (§6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from b24robots.testing import ManualClock, PortalSimulator

Env = Any
Robot = Callable[..., dict[str, Any]]

FULL_AUTH = [
    "access_token",
    "expires",
    "expires_in",
    "scope",
    "domain",
    "server_endpoint",
    "status",
    "client_endpoint",
    "member_id",
    "user_id",
    "refresh_token",
    "application_token",
]


@pytest.fixture
def world(receiver: Any) -> tuple[PortalSimulator, Any]:
    sim = PortalSimulator(clock=ManualClock(), handler_transport=httpx.ASGITransport(app=receiver.app))
    return sim, sim.add_portal()


async def test_api_only_install_posts_onappinstall(world: Any, receiver: Any) -> None:
    sim, portal = world
    app = sim.register_app("API", install_url="https://app.example.test/install", api_only=True)
    inst = await sim.install_app(app, portal)
    [post] = receiver.at("/install")
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    form = post.form
    assert list(form) == ["event", "event_handler_id", "data", "ts", "auth"]
    assert form["event"] == "ONAPPINSTALL"
    assert form["data"] == {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "en"}
    assert list(form["auth"]) == FULL_AUTH
    assert form["auth"]["application_token"] == inst.application_token and len(inst.application_token) == 32
    assert inst.installed and inst.deliveries[0].status_code == 200
    token = form["auth"]["access_token"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=sim.base_url) as client:
        info = (await client.post("/rest/app.info", json={"auth": token})).json()["result"]
    assert info["INSTALLED"] is True


async def test_ui_install_posts_the_frame_form_and_waits_for_install_finish(world: Any, receiver: Any) -> None:
    sim, portal = world
    app = sim.register_app("UI", install_url="https://app.example.test/install?x=1", api_only=False)
    inst = await sim.install_app(app, portal, finish=False)
    [post] = receiver.at("/install")
    query = dict(pair.split("=", 1) for pair in post.query.split("&"))
    assert set(query) == {"x", "DOMAIN", "PROTOCOL", "LANG", "APP_SID"}
    assert query["DOMAIN"] == portal.domain and query["PROTOCOL"] == "0" and query["LANG"] == "en"
    form = post.form
    assert list(form) == [
        "AUTH_ID",
        "AUTH_EXPIRES",
        "REFRESH_ID",
        "member_id",
        "status",
        "PLACEMENT",
        "PLACEMENT_OPTIONS",
    ]
    assert form["AUTH_EXPIRES"] == "3600" and form["PLACEMENT"] == "DEFAULT" and form["status"] == "L"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=sim.base_url) as client:
        info = await client.post("/rest/app.info", json={"auth": form["AUTH_ID"]})
        assert info.json()["result"]["INSTALLED"] is False and not inst.installed
        await sim.finish_install(app, portal)
        info = await client.post("/rest/app.info", json={"auth": form["AUTH_ID"]})
        assert info.json()["result"]["INSTALLED"] is True


async def test_update_deletes_robots_and_posts_onappupdate(env: Env, robot: Robot, receiver: Any) -> None:
    env.sim.bind_event(env.app, env.portal, "ONAPPUPDATE", "https://app.example.test/events")
    await env.ok("bizproc.robot.add", robot())
    await env.ok("bizproc.activity.add", robot(CODE="an_activity"))
    inst = await env.sim.update_app(env.app, env.portal)
    assert env.portal.registrations == {}
    assert await env.ok("bizproc.robot.list") == [] and await env.ok("bizproc.activity.list") == []
    [post] = receiver.at("/events")
    form = post.form
    assert form["event"] == "ONAPPUPDATE" and form["data"]["VERSION"] == "2" == str(inst.version)
    assert form["data"]["PREVIOUS_VERSION"] == "1"
    assert list(form["auth"]) == FULL_AUTH  # sent with the refresh token
    assert await env.ok("bizproc.robot.add", robot()) is True  # re-registering works


async def test_uninstall_sends_reduced_auth_and_kills_tokens(env: Env, robot: Robot, receiver: Any) -> None:
    env.sim.bind_event(env.app, env.portal, "ONAPPUNINSTALL", "https://app.example.test/events")
    await env.ok("bizproc.robot.add", robot())
    await env.sim.uninstall_app(env.app, env.portal, clean=True)
    [post] = receiver.at("/events")
    form = post.form
    assert form["event"] == "ONAPPUNINSTALL" and form["data"] == {"LANGUAGE_ID": "en", "CLEAN": "1"}
    assert list(form["auth"]) == [
        "domain",
        "server_endpoint",
        "client_endpoint",
        "member_id",
        "application_token",
    ]
    assert env.portal.registrations == {}
    response = await env.rest("profile")
    assert response.status_code == 401
    assert response.json() == {"error": "APPLICATION_NOT_FOUND", "error_description": "Application not found"}


async def test_reinstall_gives_new_installation(env: Env) -> None:
    old = env.sim.installation(env.app, env.portal)
    new = await env.sim.install_app(env.app, env.portal, notify=False)
    assert new.application_token != old.application_token and not old.active
    assert (await env.rest("profile")).json()["error"] == "APPLICATION_NOT_FOUND"


async def test_triggers(env: Env) -> None:
    assert await env.ok("crm.automation.trigger.add", {"CODE": "paid", "NAME": "Paid"}) is True
    assert await env.ok("crm.automation.trigger.add", {"CODE": "paid", "NAME": "Paid v2"}) is True  # name updated
    assert await env.ok("crm.automation.trigger.list") == [{"NAME": "Paid v2", "CODE": "paid"}]
    assert await env.ok("crm.automation.trigger.execute", {"CODE": "paid", "OWNER_TYPE_ID": 2, "OWNER_ID": 1}) is True
    assert [(f.code, f.owner_type_id, f.owner_id) for f in env.portal.trigger_firings] == [("paid", 2, 1)]
    assert await env.ok("crm.automation.trigger.delete", {"CODE": "paid"}) is True
    assert await env.ok("crm.automation.trigger.list") == []


@pytest.mark.parametrize(
    ("method", "params", "text"),
    [
        ("add", {"NAME": "x"}, "Empty trigger code!"),
        ("add", {"CODE": "bad code", "NAME": "x"}, "Wrong trigger code!"),
        ("add", {"CODE": "ok"}, "Empty trigger name!"),
        ("delete", {"CODE": "missing"}, "Trigger not found"),
        (
            "execute",
            {"CODE": "missing", "OWNER_TYPE_ID": 2, "OWNER_ID": 1},
            "Trigger with code missing is not registered.",
        ),
        ("execute", {"CODE": "t", "OWNER_TYPE_ID": 99, "OWNER_ID": 1}, "Incorrect parameter OWNER_TYPE_ID."),
        ("execute", {"CODE": "t", "OWNER_TYPE_ID": 2, "OWNER_ID": 0}, "Incorrect parameter OWNER_ID."),
    ],
)
async def test_trigger_errors_have_an_empty_code(env: Env, method: str, params: dict[str, Any], text: str) -> None:
    await env.ok("crm.automation.trigger.add", {"CODE": "t", "NAME": "T"})
    response = await env.rest(f"crm.automation.trigger.{method}", params)
    assert response.status_code == 400
    assert response.json() == {"error": "", "error_description": text}


async def test_trigger_admin_check_comes_first(env: Env) -> None:
    response = await env.rest("crm.automation.trigger.add", {"CODE": "x", "NAME": "x"}, token=env.user.access_token)
    assert response.status_code == 403
    assert response.json()["error_description"] == "Access denied! Admin permissions required"
    hook = env.sim.add_webhook(env.portal, user_id=2)
    via_hook = await env.client.post(f"/rest/2/{hook.secret}/crm.automation.trigger.list")
    assert via_hook.json()["error_description"] == "Access denied! Admin permissions required"


async def test_deals(env: Env) -> None:
    assert (await env.ok("crm.deal.get", {"id": 1}))["TITLE"] == "Deal #1"
    assert await env.ok("crm.deal.update", {"id": 1, "fields": {"STAGE_ID": "WON", "OPPORTUNITY": 10}}) is True
    deal = await env.ok("crm.deal.get", {"ID": "1"})
    assert deal["STAGE_ID"] == "WON" and deal["OPPORTUNITY"] == "10"
    new_id = await env.ok("crm.deal.add", {"fields": {"TITLE": "New"}})
    assert (await env.ok("crm.deal.list", {"filter": {"TITLE": "New"}}))[0]["ID"] == str(new_id)
    assert [d["ID"] for d in await env.ok("crm.deal.list", {"order": {"ID": "DESC"}, "filter": {">ID": 2}})] == [
        str(new_id),
        "3",
    ]
    missing = await env.rest("crm.deal.get", {"id": 999})
    assert missing.status_code == 400 and missing.json() == {"error": "", "error_description": "Not found"}
    bad = await env.rest("crm.deal.get", {"id": "abc"})
    assert bad.json()["error_description"] == "ID is not defined or invalid."
