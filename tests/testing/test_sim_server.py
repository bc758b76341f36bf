"""The simulator on real sockets: SimulatorServer, real HTTP deliveries, web page, JSON API, CLI, plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from b24robots.testing import PortalSimulator, SimulatorServer

Robot = Callable[..., dict[str, Any]]


@pytest.fixture
def app_server(receiver: Any) -> Iterator[str]:
    """The recording receiver served by uvicorn on 127.0.0.1 (a real handler URL)."""
    server = uvicorn.Server(uvicorn.Config(receiver.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


async def test_end_to_end_over_real_http(app_server: str, receiver: Any, robot: Robot) -> None:
    sim = PortalSimulator()
    portal = sim.add_portal()
    app = sim.register_app("Real", install_url=f"{app_server}/install")
    with SimulatorServer(sim) as server:
        assert sim.base_url == server.base_url and server.port > 0
        await sim.install_app(app, portal)
        [install] = receiver.at("/install")
        token = install.form["auth"]["access_token"]
        assert install.form["auth"]["client_endpoint"] == f"{server.base_url}/rest/"
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            added = await client.post(
                "/rest/bizproc.robot.add.json", json={**robot(HANDLER=f"{app_server}/robot"), "auth": token}
            )
            assert added.json()["result"] is True
            wf = await sim.start_robot(portal, "send_sms", properties={"phone": "+1"})
            assert wf.delivery.status_code == 200 and receiver.at("/robot")[0].form["code"] == "send_sms"
            sent = await client.post(
                "/rest/bizproc.event.send",
                data={"auth": token, "event_token": wf.event_token, "return_values[message_id]": "m-1"},
            )
            assert sent.json()["result"] is True
            await wf.closed(timeout=5)
            assert wf.return_values["message_id"] == "m-1"
            sim.faults.drop_next(1)
            with pytest.raises(httpx.TransportError):
                await client.post("/rest/profile", json={"auth": token})
            assert (await client.post("/rest/profile", json={"auth": token})).status_code == 200


async def test_web_page_and_json_api(b24_portal_server: SimulatorServer, app_server: str, robot: Robot) -> None:
    sim = b24_portal_server.sim
    portal = sim.portal()
    app = next(iter(sim.apps.values()))
    await sim.install_app(app, portal, notify=False)
    token = sim.issue_tokens(app, portal).access_token
    async with httpx.AsyncClient(base_url=b24_portal_server.base_url) as client:
        await client.post("/rest/bizproc.robot.add", json={**robot(HANDLER=f"{app_server}/robot"), "auth": token})
        started = await client.post(
            "/sim/api/workflows",
            json={"code": "send_sms", "properties": {"phone": "+7"}, "document_id": "DEAL_2"},
        )
        assert started.status_code == 200
        wf = started.json()
        assert wf["state"] == "waiting" and wf["document_id"] == ["crm", "CCrmDocumentDeal", "DEAL_2"]
        assert wf["delivery"]["status_code"] == 200
        fetched = (await client.get(f"/sim/api/workflows/{wf['id']}")).json()
        assert fetched["id"] == wf["id"]
        assert [r["code"] for r in (await client.get("/sim/api/robots")).json()] == ["send_sms"]
        page = await client.get("/sim/")
        assert page.status_code == 200 and "send_sms" in page.text and wf["id"] in page.text
        assert app.client_secret not in page.text  # secrets never shown on the page
        form = await client.post(
            "/sim/start",
            data={
                "robot": f"{portal.domain}|send_sms",
                "document_id": "DEAL_3",
                "properties": '{"phone": "1"}',
            },
        )
        assert form.status_code == 303 and "started+workflow" in form.headers["location"].replace("%20", "+")
        assert len(sim.workflows()) == 2
        broken = await client.post("/sim/start", data={"robot": f"{portal.domain}|nope", "properties": "{}"})
        assert "error=" in broken.headers["location"]
        missing = await client.post("/sim/api/workflows", json={"code": "nope"})
        assert missing.status_code == 404 and "no robot or activity" in missing.json()["error"]
        hook = (await client.post("/sim/api/webhooks", json={"user_id": 1})).json()
        assert (await client.get(hook["url"] + "profile")).json()["result"]["ID"] == "1"
        created = (await client.post("/sim/api/apps", json={"name": "Mine", "scopes": "crm,bizproc"})).json()
        assert created["client_id"].startswith("local.") and created["scope"] == "crm,bizproc"
        state = (await client.get("/sim/api/state")).json()
        assert {a["name"] for a in state["apps"]} == {"Test application", "Mine"}
        assert "client_secret" not in str(state)
        clock = await client.post("/sim/api/clock/advance", json={"seconds": 5})
        assert clock.status_code == 409


def test_b24_portal_fixture(b24_portal: PortalSimulator) -> None:
    assert len(b24_portal.portals) == 1 and len(b24_portal.apps) == 1
    assert b24_portal.portal().domain == "portal1.bitrix24.test"


async def test_call_helper(b24_portal: PortalSimulator) -> None:
    await b24_portal.install_app(next(iter(b24_portal.apps)), notify=False)
    response = await b24_portal.call("crm.deal.get", {"id": 1})
    assert response.json()["result"]["ID"] == "1"


def test_standalone_command() -> None:
    code = (
        "from b24robots.cli.portal_cmd import run_portal; "
        "run_portal('127.0.0.1', 0, 5.0, 250, 'local.abc123.45678901', "
        "client_secret='s3cret-value', portals=2)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Bitrix24 portal simulator listening on http://127.0.0.1:")
        base = first.rsplit(" ", 1)[1].strip()
        lines = [proc.stdout.readline() for _ in range(7)]
        assert any("portal2.bitrix24.test" in line for line in lines)
        state = httpx.get(f"{base}/sim/api/state").json()
        assert [a["client_id"] for a in state["apps"]] == ["local.abc123.45678901"]
        assert state["portals"][0]["burst"] == 250
        refresh = httpx.get(
            f"{base}/oauth/token/",
            params={
                "grant_type": "refresh_token",
                "client_id": "local.abc123.45678901",
                "client_secret": "s3cret-value",
                "refresh_token": "x",
            },
        )
        assert refresh.json()["error"] == "invalid_grant"  # the credentials were accepted
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert "s3cret-value" not in first + "".join(lines) + out
