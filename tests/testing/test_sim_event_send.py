"""bizproc.event.send (§3.1-3.2), bizproc.activity.log (§3.4) and timeouts (§3.3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from b24robots.testing import PortalSimulator, sign_event_token

Env = Any
Robot = Callable[..., dict[str, Any]]


async def start(env: Env, robot: Robot, **changes: Any) -> Any:
    await env.ok("bizproc.robot.add", robot(**changes))
    return await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"})


async def test_bad_signature_is_the_only_error(env: Env, robot: Robot) -> None:
    wf = await start(env, robot)
    for token in (wf.event_token[:-1] + ("0" if wf.event_token[-1] != "0" else "1"), "garbage", ""):
        response = await env.rest("bizproc.event.send", {"event_token": token, "return_values": {"ok": "Y"}})
        assert response.status_code == 403
        assert response.json() == {"error": "ACCESS_DENIED", "error_description": "Access denied!"}
    response = await env.rest("bizproc.event.send", {})
    assert response.status_code == 403
    assert wf.state == "waiting"


async def test_token_signed_by_another_portal_is_refused(env: Env, robot: Robot) -> None:
    wf = await start(env, robot)
    other = env.sim.add_portal()
    forged = sign_event_token(other.signing_secret, wf.id, wf.activity_name, wf.event_id)
    response = await env.rest("bizproc.event.send", {"event_token": forged})
    assert response.status_code == 403


async def test_true_at_once_first_answer_wins(env: Env, robot: Robot) -> None:
    env.sim.event_apply_delay = 0.05
    wf = await start(env, robot)
    first = await env.rest(
        "bizproc.event.send",
        {"EVENT_TOKEN": wf.event_token, "RETURN_VALUES": {"message_id": "abc", "ok": "Y", "count": "7"}},
    )
    assert first.status_code == 200 and first.json()["result"] is True and "time" in first.json()
    assert wf.state == "waiting"  # applied after the answer, by a background job
    await wf.closed(timeout=2)
    second = await env.rest(
        "bizproc.event.send", {"event_token": wf.event_token, "return_values": {"message_id": "zzz"}}
    )
    assert second.status_code == 200 and second.json()["result"] is True
    for _ in range(200):  # the background job has taken the second answer when it counts it as ignored
        if wf.ignored_events:
            break
        await asyncio.sleep(0.01)
    assert wf.return_values == {"message_id": "abc", "ok": True, "count": 7, "IsTimeout": 0}
    assert wf.closed_by == "event" and wf.ignored_events == 1


async def test_return_values_matched_case_insensitively_unknown_dropped(env: Env, robot: Robot) -> None:
    wf = await start(env, robot)
    await env.rest(
        "bizproc.event.send",
        {
            "event_token": wf.event_token,
            "return_values": {"MESSAGE_ID": "m1", "Unknown": "x"},
            "log_message": "SMS sent",
        },
    )
    await wf.closed(timeout=2)
    assert wf.return_values == {"message_id": "m1", "ok": "N", "count": None, "IsTimeout": 0}
    assert [e.message for e in wf.log if e.source == "event.send"] == ["SMS sent"]


async def test_falsy_values_are_stored_raw(env: Env, robot: Robot) -> None:
    wf = await start(env, robot)
    await env.rest("bizproc.event.send", {"event_token": wf.event_token, "return_values": {"count": "0", "ok": ""}})
    await wf.closed(timeout=2)
    assert wf.return_values["count"] == "0" and wf.return_values["ok"] == ""


async def test_form_encoded_event_send(env: Env, robot: Robot) -> None:
    wf = await start(env, robot)
    response = await env.rest(
        "bizproc.event.send", {"event_token": wf.event_token, "return_values": {"ok": "Y"}}, form=True
    )
    assert response.json()["result"] is True
    await wf.closed(timeout=2)
    assert wf.return_values["ok"] is True


async def test_use_subscription_n_closes_at_once_and_send_is_a_noop(env: Env, robot: Robot) -> None:
    wf = await start(env, robot, USE_SUBSCRIPTION="N")
    assert wf.is_closed and wf.closed_by == "no_subscription"
    assert "IsTimeout" not in wf.return_values
    response = await env.rest("bizproc.event.send", {"event_token": wf.event_token, "return_values": {"ok": "Y"}})
    assert response.json()["result"] is True
    await asyncio.sleep(0.01)
    assert wf.return_values["ok"] == "N"


async def test_empty_registered_subscription_means_n_unless_the_instance_says_y(
    env: Env, robot: Robot, receiver: Any
) -> None:
    # restactivity.php::__construct: UseSubscription is 'Y' only for a registered 'Y'; an empty one leaves
    # the choice to the robot's settings, whose default is N
    await env.ok("bizproc.robot.add", robot(USE_SUBSCRIPTION=""))
    closed = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"})
    waiting = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"}, use_subscription="Y")
    assert closed.is_closed and closed.closed_by == "no_subscription" and waiting.state == "waiting"
    assert [r.form["use_subscription"] for r in receiver.at("/robot")] == ["N", "Y"]


async def test_timeout_closes_with_defaults(env: Env, robot: Robot, clock: Any) -> None:
    await env.ok("bizproc.robot.add", robot())
    wf = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"}, timeout_duration=60)
    clock.advance(59)
    assert wf.state == "waiting"
    clock.advance(1)
    assert wf.is_closed and wf.is_timeout and wf.closed_by == "timeout"
    assert wf.return_values == {"message_id": None, "ok": "N", "count": None, "IsTimeout": 1}
    late = await env.rest("bizproc.event.send", {"event_token": wf.event_token, "return_values": {"ok": "Y"}})
    assert late.json()["result"] is True
    await asyncio.sleep(0.01)
    assert wf.return_values["ok"] == "N"


async def test_timeout_on_the_system_clock(robot: Robot) -> None:
    sim = PortalSimulator(handler_transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    portal = sim.add_portal()
    app = sim.register_app()
    await sim.install_app(app, portal, notify=False)
    from b24robots.testing.registration import add

    add(portal, app.client_id, True, True, robot())
    wf = await sim.start_robot(portal, "send_sms", properties={"phone": "1"}, timeout_duration=1)
    await wf.closed(timeout=3)
    assert wf.is_timeout


async def test_stale_event_id_is_ignored(env: Env, robot: Robot) -> None:
    wf = await start(env, robot)
    stale = sign_event_token(env.portal.signing_secret, wf.id, wf.activity_name, "X" * 32)
    response = await env.rest("bizproc.event.send", {"event_token": stale, "return_values": {"ok": "Y"}})
    assert response.json()["result"] is True
    await asyncio.sleep(0.01)
    assert wf.state == "waiting" and wf.ignored_events == 1


async def test_event_send_through_a_webhook(env: Env, robot: Robot) -> None:
    wf = await start(env, robot)
    hook = env.sim.add_webhook(env.portal, user_id=2, scopes=["bizproc"])
    response = await env.client.post(
        f"/rest/{hook.user_id}/{hook.secret}/bizproc.event.send.json",
        json={"event_token": wf.event_token, "return_values": {"ok": "Y"}},
    )
    assert response.status_code == 200
    await wf.closed(timeout=2)


async def test_legacy_strict_mode_errors_for_finished_workflows(env: Env, robot: Robot) -> None:
    env.sim.legacy_strict_event_send = True
    wf = await start(env, robot)
    assert (await env.rest("bizproc.event.send", {"event_token": wf.event_token})).json()["result"] is True
    assert wf.is_closed  # synchronous in the legacy build
    again = await env.rest("bizproc.event.send", {"event_token": wf.event_token})
    assert again.status_code == 400
    assert again.json() == {"error": "ERROR_CORE", "error_description": "WorkflowNotFound"}


async def test_activity_log(env: Env, robot: Robot) -> None:
    wf = await start(env, robot)
    empty = await env.rest("bizproc.activity.log", {"event_token": wf.event_token, "log_message": ""})
    assert empty.status_code == 400
    assert empty.json() == {"error": "ERROR_EMPTY_LOG_MESSAGE", "error_description": "Empty log message!"}
    bad = await env.rest("bizproc.activity.log", {"event_token": "nope", "log_message": "x"})
    assert bad.status_code == 403 and bad.json()["error"] == "ACCESS_DENIED"
    for text in ("step 1", "step 2"):
        ok = await env.rest("bizproc.activity.log", {"EVENT_TOKEN": wf.event_token, "LOG_MESSAGE": text})
        assert ok.json()["result"] is True
    assert [e.message for e in wf.log if e.source == "activity.log"] == ["step 1", "step 2"]
    assert wf.state == "waiting"  # logging keeps the activity waiting
    await env.rest("bizproc.event.send", {"event_token": wf.event_token})
    await wf.closed(timeout=2)
    finished = await env.rest("bizproc.activity.log", {"event_token": wf.event_token, "log_message": "late"})
    assert finished.status_code == 400 and finished.json()["error"] == "404"


async def test_activity_log_on_a_closed_activity_of_a_live_workflow_is_true(env: Env, robot: Robot) -> None:
    # writeActivityLog reports only the engine's errors; onExternalEvent ignores a closed activity
    await env.ok("bizproc.robot.add", robot())
    wf = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"}, keep_running=True)
    await env.rest("bizproc.event.send", {"event_token": wf.event_token})
    await wf.closed(timeout=2)
    late = await env.rest("bizproc.activity.log", {"event_token": wf.event_token, "log_message": "late"})
    assert late.status_code == 200 and late.json()["result"] is True
    assert wf.is_closed and not wf.finished
    assert "late" not in [e.message for e in wf.log] and wf.ignored_events == 1
