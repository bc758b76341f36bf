"""Inbound webhooks (§4.4): app-only methods refused, bizproc callbacks and CRM usable."""

from __future__ import annotations

from typing import Any

import pytest

Env = Any
APP_ONLY = [
    f"bizproc.{kind}.{action}" for kind in ("robot", "activity") for action in ("add", "update", "delete", "list")
] + [f"crm.automation.trigger.{action}" for action in ("add", "list", "delete", "execute")]


@pytest.mark.parametrize("method", APP_ONLY)
async def test_app_only_methods_are_refused(env: Env, method: str) -> None:
    hook = env.sim.add_webhook(env.portal, user_id=1)
    response = await env.client.post(f"/rest/{hook.user_id}/{hook.secret}/{method}", json={"CODE": "x"})
    assert response.status_code == 403
    assert response.json() == {
        "error": "ACCESS_DENIED",
        "error_description": "Access denied! Application context required",
    }


async def test_usable_methods_and_bad_secret(env: Env) -> None:
    hook = env.sim.add_webhook(env.portal, user_id=1)
    base = env.sim.webhook_url(hook, env.portal).removeprefix(env.sim.base_url)
    deal = await env.client.get(f"{base}crm.deal.get.json", params={"id": 1})
    assert deal.json()["result"]["ID"] == "1"
    log = await env.client.post(f"{base}bizproc.activity.log", json={"event_token": "x", "log_message": "y"})
    assert log.status_code == 403 and log.json()["error_description"] == "Access denied!"  # reached the method
    wrong = await env.client.get(f"/rest/1/{'z' * 16}/profile")
    assert wrong.status_code == 403 and wrong.json()["error"] == "INVALID_CREDENTIALS"


async def test_batch_through_a_webhook_applies_the_same_refusal(env: Env) -> None:
    hook = env.sim.add_webhook(env.portal, user_id=1)
    response = await env.client.post(
        f"/rest/{hook.user_id}/{hook.secret}/batch", json={"cmd": {"a": "bizproc.robot.list", "b": "profile"}}
    )
    result = response.json()["result"]
    assert result["result_error"]["a"]["error_description"] == "Access denied! Application context required"
    assert result["result"]["b"]["ID"] == "1"


async def test_webhook_scope_is_enforced(env: Env) -> None:
    hook = env.sim.add_webhook(env.portal, user_id=1, scopes=["bizproc"])
    response = await env.client.get(f"/rest/{hook.user_id}/{hook.secret}/crm.deal.get", params={"id": 1})
    assert response.status_code == 401 and response.json()["error"] == "insufficient_scope"
