"""The OAuth server (§4.3), token checks on REST (§5.3) and app.info."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

Env = Any


def grant(env: Env, **params: str) -> dict[str, str]:
    return {"client_id": env.app.client_id, "client_secret": env.app.client_secret, **params}


async def test_refresh_grant_answers_every_field_and_rotates(env: Env) -> None:
    response = await env.client.get(
        "/oauth/token/", params=grant(env, grant_type="refresh_token", refresh_token=env.admin.refresh_token)
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "client_endpoint",
        "domain",
        "expires",
        "expires_in",
        "member_id",
        "refresh_token",
        "scope",
        "server_endpoint",
        "status",
        "user_id",
    }
    assert body["expires_in"] == 3600 and body["expires"] == int(env.sim.now()) + 3600
    assert body["member_id"] == env.portal.member_id and body["user_id"] == 1 and body["status"] == "L"
    assert body["client_endpoint"] == f"{env.sim.base_url}/rest/" and body["scope"] == env.app.scope
    assert body["refresh_token"] != env.admin.refresh_token
    assert (await env.ok("profile", token=body["access_token"]))["ID"] == "1"
    reused = await env.client.get(
        "/oauth/token/", params=grant(env, grant_type="refresh_token", refresh_token=env.admin.refresh_token)
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert set(reused.json()) == {"error", "error_description"}


async def test_old_refresh_token_kept_when_rotation_is_off(env: Env) -> None:
    env.sim.rotate_refresh_tokens = False
    for _ in range(2):
        response = await env.client.post(
            "/oauth/token/",
            data=grant(env, grant_type="refresh_token", refresh_token=env.admin.refresh_token),
        )
        assert response.status_code == 200


async def test_authorization_code_grant(env: Env, clock: Any) -> None:
    code = env.sim.issue_auth_code(env.app, env.portal, user_id=2)
    response = await env.client.post("/oauth/token/", data=grant(env, grant_type="authorization_code", code=code))
    assert response.status_code == 200 and response.json()["user_id"] == 2
    again = await env.client.post("/oauth/token/", data=grant(env, grant_type="authorization_code", code=code))
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    stale = env.sim.issue_auth_code(env.app, env.portal)
    clock.advance(31)
    late = await env.client.post("/oauth/token/", data=grant(env, grant_type="authorization_code", code=stale))
    assert late.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("override", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "local.nope.1"}, 401, "invalid_client"),
        ({"refresh_token": "unknown"}, 400, "invalid_grant"),
        ({"grant_type": "password"}, 400, "invalid_request"),
    ],
)
async def test_oauth_errors(env: Env, override: dict[str, str], status: int, error: str) -> None:
    params = grant(env, grant_type="refresh_token", refresh_token=env.admin.refresh_token) | override
    response = await env.client.get("/oauth/token/", params=params)
    assert response.status_code == status and response.json()["error"] == error


async def test_refresh_after_uninstall_is_invalid_client(env: Env) -> None:
    await env.sim.uninstall_app(env.app, env.portal)
    response = await env.client.get(
        "/oauth/token/", params=grant(env, grant_type="refresh_token", refresh_token=env.admin.refresh_token)
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_expired_token_then_refresh(env: Env, clock: Any) -> None:
    clock.advance(3600)
    response = await env.rest("profile")
    assert response.status_code == 401
    assert response.json() == {
        "error": "expired_token",
        "error_description": "The access token provided has expired",
    }
    fresh = await env.client.get(
        "/oauth/token/", params=grant(env, grant_type="refresh_token", refresh_token=env.admin.refresh_token)
    )
    assert (await env.rest("profile", token=fresh.json()["access_token"])).status_code == 200


async def test_expire_tokens_on_demand_per_portal(env: Env) -> None:
    other = env.sim.add_portal()
    await env.sim.install_app(env.app, other, notify=False)
    other_token = env.sim.issue_tokens(env.app, other).access_token
    env.sim.expire_tokens(env.portal)
    assert (await env.rest("profile")).json()["error"] == "expired_token"
    assert (await env.rest("profile", token=other_token)).status_code == 200
    env.sim.expire_tokens()
    assert (await env.rest("profile", token=other_token)).json()["error"] == "expired_token"


async def test_unknown_and_missing_tokens(env: Env) -> None:
    unknown = await env.rest("profile", token="f" * 70)
    assert unknown.status_code == 401
    assert unknown.json() == {
        "error": "invalid_token",
        "error_description": "Unable to get application by token",
    }
    missing = await env.client.post("/rest/profile", json={})
    assert missing.status_code == 401
    assert missing.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}


async def test_app_info_has_portal_and_oauth_server_shapes(env: Env) -> None:
    portal_info = await env.ok("app.info")
    assert portal_info["CODE"] == env.app.client_id and portal_info["INSTALLED"] is True
    assert portal_info["STATUS"] == "L" and portal_info["LICENSE_FAMILY"] == "project"
    assert "client_id" not in portal_info and "install" not in portal_info  # rest_provider.php::appInfo
    answer = await env.client.post("/oauth-server/rest/app.info", data={"auth": env.admin.access_token})
    info = answer.json()["result"]
    assert info["client_id"] == env.app.client_id and info["user_id"] == 1
    assert info["scope"] == env.app.scope and datetime.fromisoformat(info["expires"])
    assert info["install"] == {
        "installed": True,
        "version": 1,
        "status": "L",
        "scope": env.app.scope,
        "domain": env.portal.domain,
        "uri": f"https://{env.portal.domain}",
        "client_endpoint": f"{env.sim.base_url}/rest/",
        "member_id": env.portal.member_id,
        "member_type": "PORTAL",
    }
    # b24pysdk asks the OAuth server with a trailing slash: /rest/app.info/
    slash = await env.client.get("/oauth-server/rest/app.info/", params={"auth": env.admin.access_token})
    assert slash.json()["result"]["client_id"] == env.app.client_id


async def test_profile_and_user_get(env: Env) -> None:
    assert (await env.ok("profile", token=env.user.access_token))["ADMIN"] is False
    response = await env.rest("user.get", {"ID": 2})
    body = response.json()
    assert [u["ID"] for u in body["result"]] == ["2"] and body["total"] == 1
    assert body["result"][0]["EMAIL"] == f"worker@{env.portal.domain}"
    everyone = await env.rest("user.get", {"FILTER": {"ACTIVE": True}})
    assert [u["ID"] for u in everyone.json()["result"]] == ["1", "2"]
