"""The POST a robot sends to HANDLER (§2.2-2.4) and how the simulator records it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest

from b24robots.errors import SimulatorError
from b24robots.testing import sign_event_token, unsign_event_token

Env = Any
Robot = Callable[..., dict[str, Any]]

FIELD_ORDER = [
    "workflow_id",
    "code",
    "document_id[0]",
    "document_id[1]",
    "document_id[2]",
    "document_type[0]",
    "document_type[1]",
    "document_type[2]",
    "event_token",
    "properties[phone]",
    "properties[to]",
    "properties[channel]",
    "use_subscription",
    "timeout_duration",
    "ts",
    "auth[access_token]",
    "auth[expires]",
    "auth[expires_in]",
    "auth[scope]",
    "auth[domain]",
    "auth[server_endpoint]",
    "auth[status]",
    "auth[client_endpoint]",
    "auth[member_id]",
    "auth[user_id]",
    "auth[refresh_token]",
    "auth[application_token]",
]


def raw_names(body: bytes) -> list[str]:
    return [pair.split("=", 1)[0].replace("%5B", "[").replace("%5D", "]") for pair in body.decode().split("&")]


async def test_every_field_of_the_handler_body(env: Env, robot: Robot, receiver: Any) -> None:
    await env.ok("bizproc.robot.add", robot())
    wf = await env.sim.start_robot(
        env.portal,
        "send_sms",
        document_id=("crm", "CCrmDocumentDeal", "DEAL_1188"),
        properties={"phone": "+49 30 1", "to": 1},
    )
    [post] = receiver.at("/robot")
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert post.headers["user-agent"] == "Bitrix24 Webhook Engine"
    assert raw_names(post.body) == FIELD_ORDER
    assert b"%5B" in post.body and b"[" not in post.body  # brackets percent-encoded like http_build_query
    form = post.form
    now = int(env.sim.now())
    inst = env.sim.installation(env.app, env.portal)
    assert re.fullmatch(r"[0-9a-f]{14}\.\d{8}", form["workflow_id"]) and form["workflow_id"] == wf.id
    assert form["code"] == "send_sms"
    assert form["document_id"] == ["crm", "CCrmDocumentDeal", "DEAL_1188"]
    assert form["document_type"] == ["crm", "CCrmDocumentDeal", "DEAL"]
    assert form["properties"] == {"phone": "+49 30 1", "to": "user_1", "channel": "sms"}
    assert form["use_subscription"] == "Y" and form["timeout_duration"] == "0" and form["ts"] == str(now)
    auth = form["auth"]
    assert auth["expires"] == str(now + 3600) and auth["expires_in"] == "3600"
    assert auth["scope"] == "crm,bizproc,user_brief,placement"
    assert auth["domain"] == env.portal.domain and auth["member_id"] == env.portal.member_id
    assert auth["client_endpoint"] == f"{env.sim.base_url}/rest/"
    assert auth["server_endpoint"] == f"{env.sim.base_url}/oauth-server/rest/"  # the OAuth server's
    assert auth["status"] == "L" and auth["user_id"] == "1"
    assert auth["application_token"] == inst.application_token
    assert re.fullmatch(r"[0-9a-f]{70}", auth["access_token"]) and re.fullmatch(r"[0-9a-f]{70}", auth["refresh_token"])
    # event_token = wf|activity|eventId . hex HMAC-SHA256 keyed with "bizproc" + portal secret
    wf_id, activity, event_id = unsign_event_token(env.portal.signing_secret, form["event_token"]) or (
        "",
        "",
        "",
    )
    assert (wf_id, activity, event_id) == (wf.id, wf.activity_name, wf.event_id)
    assert re.fullmatch(r"A\d{5}_\d{4}_\d{5}_\d{5}", activity) and re.fullmatch(r"[0-9A-Za-z]{32}", event_id)
    assert form["event_token"] == sign_event_token(env.portal.signing_secret, wf_id, activity, event_id)
    assert re.fullmatch(r".+\.[0-9a-f]{64}", form["event_token"])
    # the minted token pair is real: the access token calls REST as AUTH user 1, the refresh token refreshes
    assert (await env.ok("profile", token=auth["access_token"]))["ID"] == "1"
    refreshed = await env.client.get(
        "/oauth/token/",
        params={
            "grant_type": "refresh_token",
            "client_id": env.app.client_id,
            "client_secret": env.app.client_secret,
            "refresh_token": auth["refresh_token"],
        },
    )
    assert refreshed.status_code == 200
    assert wf.delivery is not None and wf.delivery.status_code == 200 and wf.delivery.latency is not None


async def test_values_are_externalized_per_type(env: Env, robot: Robot, receiver: Any) -> None:
    props = {
        "flag": {"Name": "Flag", "Type": "bool"},
        "who": {"Name": "Who", "Type": "user", "Multiple": "Y"},
        "pick": {"Name": "Pick", "Type": "select", "Options": {"a": "A", "b": "B"}},
        "day": {"Name": "Day", "Type": "date"},
        "moment": {"Name": "Moment", "Type": "datetime"},
        "n": {"Name": "N", "Type": "int"},
        "x": {"Name": "X", "Type": "double"},
        "tags": {"Name": "Tags", "Type": "string", "Multiple": "Y"},
        "empty": {"Name": "Empty", "Type": "text"},
    }
    await env.ok("bizproc.robot.add", robot(PROPERTIES=props))
    await env.sim.start_robot(
        env.portal,
        "send_sms",
        properties={
            "flag": True,
            "who": [1, "user_2"],
            "pick": "b",
            "day": dt.date(2024, 5, 27),
            "moment": dt.datetime(2024, 5, 27, 14, 30, 0),
            "n": 333,
            "x": 2.5,
            "tags": ["vip", "b2b"],
            "empty": None,
        },
    )
    form = receiver.at("/robot")[-1].form
    assert form["properties"] == {
        "flag": "Y",
        "who": ["user_1", "user_2"],
        "pick": "b",
        "day": "05/27/2024",  # the default portal speaks en: MM/DD/YYYY
        "moment": "05/27/2024 02:30:00 pm",
        "n": "333",
        "x": "2.5",
        "tags": ["vip", "b2b"],
        "empty": "",
    }
    raw = receiver.at("/robot")[-1].body.decode()
    assert "properties%5Btags%5D%5B0%5D=vip&properties%5Btags%5D%5B1%5D=b2b" in raw


@pytest.mark.parametrize(
    ("language", "culture", "day", "moment"),
    [
        ("ru", "", "27.05.2024", "27.05.2024 14:30:00"),
        ("de", "", "27.05.2024", "27.05.2024 14:30:00"),
        ("en", "", "05/27/2024", "05/27/2024 02:30:00 pm"),
        ("fr", "", "27/05/2024", "27/05/2024 14:30:00"),
        ("es", "", "27/05/2024", "27/05/2024 14:30:00"),
        ("br", "", "27/05/2024", "27/05/2024 14:30:00"),
        ("la", "", "27/05/2024", "27/05/2024 14:30:00"),
        ("en", "de", "27.05.2024", "27.05.2024 14:30:00"),  # a site format other than the language's
    ],
)
async def test_dates_go_out_in_the_portal_culture(
    sim: Any, robot: Robot, receiver: Any, language: str, culture: str, day: str, moment: str
) -> None:
    portal = sim.add_portal(language=language, culture=culture)
    app = sim.register_app()
    await sim.install_app(app, portal, notify=False)
    from b24robots.testing.registration import add

    props = {"d": {"Name": "D", "Type": "date"}, "m": {"Name": "M", "Type": "datetime"}}
    add(portal, app.client_id, True, True, robot(PROPERTIES=props))
    # an aware moment is shown in the (simulated, UTC) server's time
    aware = dt.datetime(2024, 5, 27, 17, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    await sim.start_robot(portal, "send_sms", properties={"d": dt.date(2024, 5, 27), "m": aware})
    assert receiver.at("/robot")[-1].form["properties"] == {"d": day, "m": moment}


async def test_raw_wire_values_are_sent_as_given(env: Env, robot: Robot, receiver: Any) -> None:
    props = {"n": {"Name": "N", "Type": "int"}, "who": {"Name": "Who", "Type": "user"}}
    await env.ok("bizproc.robot.add", robot(PROPERTIES=props))
    await env.sim.start_robot(
        env.portal, "send_sms", properties={"who": 1}, properties_raw={"n": ["1500.50"], "extra": "x"}
    )
    assert receiver.at("/robot")[-1].form["properties"] == {"n": ["1500.50"], "who": "user_1", "extra": "x"}
    with pytest.raises(SimulatorError, match="both"):
        await env.sim.start_robot(env.portal, "send_sms", properties={"n": 1}, properties_raw={"n": "1"})
    with pytest.raises(SimulatorError, match="must be a string"):
        await env.sim.start_robot(env.portal, "send_sms", properties_raw={"n": 5})


def test_unknown_culture_is_refused(sim: Any) -> None:
    with pytest.raises(SimulatorError, match="unknown culture 'xx'"):
        sim.add_portal(culture="xx")


async def test_no_properties_key_when_robot_has_none(env: Env, robot: Robot, receiver: Any) -> None:
    await env.ok("bizproc.robot.add", robot(PROPERTIES=None, USE_SUBSCRIPTION="N"))
    await env.sim.start_robot(env.portal, "send_sms")
    form = receiver.at("/robot")[-1].form
    assert "properties" not in form and form["use_subscription"] == "N"


async def test_user_override_and_auth_user_zero(env: Env, robot: Robot, receiver: Any) -> None:
    await env.ok("bizproc.robot.add", robot(AUTH_USER_ID=0))
    await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"}, user_id=2)
    assert receiver.at("/robot")[-1].form["auth"]["user_id"] == "2"
    await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"})
    auth = receiver.at("/robot")[-1].form["auth"]
    # UNCONFIRMED shape: with no user only the installation fields are sent
    assert set(auth) == {"domain", "server_endpoint", "client_endpoint", "member_id", "application_token"}


async def test_timeout_duration_sent_as_computed_even_when_not_waiting(env: Env, robot: Robot, receiver: Any) -> None:
    # restactivity.php::execute sends calculateTimeoutDuration() whatever UseSubscription is
    await env.ok("bizproc.robot.add", robot())
    await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"}, timeout_duration=660)
    assert receiver.at("/robot")[-1].form["timeout_duration"] == "660"
    await env.ok("bizproc.robot.add", robot(CODE="fire_and_forget", USE_SUBSCRIPTION="N"))
    wf = await env.sim.start_robot(env.portal, "fire_and_forget", properties={"phone": "1"}, timeout_duration=660)
    form = receiver.at("/robot")[-1].form
    assert form["use_subscription"] == "N" and form["timeout_duration"] == "660"
    assert wf.is_closed and wf.deadline is None


async def test_single_delivery_no_retry_on_error(env: Env, robot: Robot, receiver: Any) -> None:
    receiver.status = 500
    await env.ok("bizproc.robot.add", robot())
    wf = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"})
    assert len(receiver.at("/robot")) == 1
    assert wf.delivery.status_code == 500 and not wf.delivery.ok
    assert wf.state == "waiting"


async def test_unreachable_handler_is_recorded(env: Env, robot: Robot) -> None:
    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    env.sim.handler_transport = httpx.MockTransport(refuse)
    await env.ok("bizproc.robot.add", robot())
    wf = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"})
    assert wf.delivery.status_code is None and "ConnectError" in wf.delivery.error


async def test_clear_errors_for_bad_start_requests(env: Env, robot: Robot) -> None:
    await env.ok("bizproc.robot.add", robot())
    with pytest.raises(SimulatorError, match="no robot or activity with CODE 'nope'"):
        await env.sim.start_robot(env.portal, "nope")
    with pytest.raises(SimulatorError, match="has no properties"):
        await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1", "bogus": 1})
    with pytest.raises(SimulatorError, match="required property 'phone'"):
        await env.sim.start_robot(env.portal, "send_sms")
    with pytest.raises(SimulatorError, match="not one of the options"):
        await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1", "channel": "fax"})
    with pytest.raises(SimulatorError, match="no user 9"):
        await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"}, user_id=9)
