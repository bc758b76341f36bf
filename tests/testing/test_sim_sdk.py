"""Wire compatibility with a client we did not write: the official b24pysdk 1.3.2.

The SDK hard-codes ``https://<domain>/rest/`` and ``https://oauth.bitrix24.tech``. It is pointed at the
simulator only through standard ``requests`` settings (HTTPS_PROXY + REQUESTS_CA_BUNDLE) and a local
intercepting proxy; nothing in the SDK is patched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

b24pysdk = pytest.importorskip("b24pysdk")
from b24pysdk import BitrixApp, BitrixToken  # noqa: E402
from b24pysdk.credentials import OAuthWorkflowData  # noqa: E402

from b24robots.testing import PortalSimulator, SimulatorServer  # noqa: E402

Robot = Callable[..., dict[str, Any]]
OAUTH_HOSTS = ["oauth.bitrix24.tech", "oauth.bitrix.info"]


def wait_closed(wf: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not wf.is_closed:
        assert time.monotonic() < deadline, "workflow did not close"
        time.sleep(0.01)


def test_sdk_registers_batches_refreshes_and_answers(
    intercept_proxy_factory: Callable[..., Any], receiver: Any, robot: Robot
) -> None:
    sim = PortalSimulator(endpoints="per_domain", handler_transport=httpx.ASGITransport(app=receiver.app))
    portal = sim.add_portal()
    app = sim.register_app("SDK app")
    asyncio.run(sim.install_app(app, portal, notify=False))
    pair = sim.issue_tokens(app, portal)
    with SimulatorServer(sim) as server:
        proxy = intercept_proxy_factory([portal.domain, *OAUTH_HOSTS], server.port)
        bitrix_app = BitrixApp(client_id=app.client_id, client_secret=app.client_secret)
        token = BitrixToken(
            domain=portal.domain,
            auth_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires=datetime.fromtimestamp(pair.expires, tz=UTC),
            expires_in=pair.expires_in,
            bitrix_app=bitrix_app,
        )

        added = token.call_method("bizproc.robot.add", robot())
        assert added["result"] is True and "time" in added
        assert token.call_method("bizproc.robot.list")["result"] == ["send_sms"]

        batch = token.call_batch({"deal": ("crm.deal.get", {"id": 2}), "me": ("profile", {})})
        assert batch["result"]["result"]["deal"]["TITLE"] == "Deal #2"
        assert batch["result"]["result"]["me"]["ADMIN"] is True

        # Token refresh: the portal says expired_token, the SDK refreshes at the OAuth host and replays.
        sim.expire_tokens(portal)
        old_refresh = token.refresh_token
        assert token.call_method("profile")["result"]["ID"] == "1"
        assert token.refresh_token != old_refresh and token.auth_token != pair.access_token
        assert sim.refresh_tokens[old_refresh].used
        assert "oauth.bitrix24.tech" in proxy.connects

        # A robot call parsed by the SDK's workflow payload model, answered through the SDK.
        wf = asyncio.run(sim.start_robot(portal, "send_sms", properties={"phone": "+49", "to": 2}))
        flat = dict(parse_qsl(receiver.at("/robot")[-1].body.decode(), keep_blank_values=True))
        data = OAuthWorkflowData.from_dict(flat)
        assert data.workflow_id == wf.id and data.code == "send_sms" and data.use_subscription is True
        assert data.document_id == ["crm", "CCrmDocumentDeal", "DEAL_1"]
        assert data.properties == {"phone": "+49", "to": "user_2", "channel": "sms"}
        assert data.auth.member_id == portal.member_id and data.auth.user_id == 1
        assert data.auth.application_token == sim.installation(app, portal).application_token

        robot_token = BitrixToken.from_oauth_workflow_data(data, bitrix_app)
        info = robot_token.get_app_info()
        assert data.validate_against_app_info(info.result) is True
        sent = robot_token.call_method(
            "bizproc.event.send", {"event_token": data.event_token, "return_values": {"ok": "Y", "count": 3}}
        )
        assert sent["result"] is True
        wait_closed(wf)
        assert wf.return_values["ok"] is True and wf.return_values["count"] == 3


def test_sdk_sees_rate_limit_and_unknown_method_errors(intercept_proxy_factory: Callable[..., Any]) -> None:
    from b24pysdk.errors import BitrixAPIError

    sim = PortalSimulator(endpoints="per_domain")
    portal = sim.add_portal()
    app = sim.register_app()
    asyncio.run(sim.install_app(app, portal, notify=False))
    pair = sim.issue_tokens(app, portal)
    with SimulatorServer(sim) as server:
        intercept_proxy_factory([portal.domain, *OAUTH_HOSTS], server.port)
        bitrix_app = BitrixApp(client_id=app.client_id, client_secret=app.client_secret)
        token = BitrixToken(domain=portal.domain, auth_token=pair.access_token, bitrix_app=bitrix_app)
        with pytest.raises(BitrixAPIError) as missing:
            token.call_method("no.such.method")
        assert missing.value.status_code == 404 and missing.value.error == "ERROR_METHOD_NOT_FOUND"
        sim.faults.fail_next(1, status=503, error="QUERY_LIMIT_EXCEEDED", description="Too many requests")
        # the SDK retries 503 by itself and then succeeds
        assert token.call_method("profile", timeout=10)["result"]["ID"] == "1"
