"""The inbound API over HTTP: keys, scopes, revocation, idempotency, status, and the OpenAPI schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from b24robots.testing import automation
from b24robots.testing.app_fixtures import RobotHarness
from tests.test_triggers import router


async def _until_delivered(h: RobotHarness, client: object, url: str, headers: dict[str, str]) -> dict[str, object]:
    body: dict[str, object] = {}
    for _ in range(300):
        resp = await client.get(url, headers=headers)  # type: ignore[attr-defined]
        body = resp.json()
        if body["status"] != "pending":
            return body
        await asyncio.sleep(0.03)
    return body


async def test_fire_over_http_once_even_when_the_client_retries(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        deal_id = int(h.portal.add_deal()["ID"])
        automation.add_rule(h.sim, "payment.received", portal=h.portal, stage="WON", robot="t.note")
        inst = h.svc.installations.get(h.portal.member_id)
        _key, secret = h.svc.apikeys.create("1C", inst.id, triggers=["payment.received"])
        auth = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "payment-1001"}
        async with h.client() as c:
            first = await c.post(
                "/api/v1/triggers/payment.received/fire", json={"entity": f"DEAL_{deal_id}"}, headers=auth
            )
            assert first.status_code == 202, first.text
            retried = await c.post(
                "/api/v1/triggers/payment.received/fire",
                json={"entity_type_id": 2, "entity_id": deal_id},  # the same request, written the other way
                headers=auth,
            )
            assert retried.status_code == 202 and retried.json()["id"] == first.json()["id"]
            assert retried.headers["Idempotent-Replayed"] == "true"
            other = await c.post("/api/v1/triggers/payment.received/fire", json={"entity": "DEAL_999"}, headers=auth)
            assert other.status_code == 409 and "different request" in other.json()["reason"]
            done = await _until_delivered(h, c, first.json()["status_url"], {"X-API-Key": secret})
            assert done["status"] == "delivered" and done["entity"] == f"DEAL_{deal_id}"
        for _ in range(200):
            if h.portal.workflows and all(w.is_closed for w in h.portal.workflows.values()):
                break
            await asyncio.sleep(0.02)
        assert [(f.code, f.owner_id) for f in h.portal.trigger_firings] == [("payment.received", deal_id)]
        assert h.portal.deals[deal_id]["STAGE_ID"] == "WON"
        (wf,) = h.portal.workflows.values()
        assert wf.return_values["note"] == f"paid DEAL_{deal_id}"  # external system → trigger → rule → robot
        assert h.svc.apikeys.all()[0].last_used_at is not None


async def test_keys_are_scoped_and_revocable(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        deal = f"DEAL_{h.portal.add_deal()['ID']}"
        inst = h.svc.installations.get(h.portal.member_id)
        key, secret = h.svc.apikeys.create("ERP", inst.id, triggers=["order.shipped"], templates=["7"])
        hdr = {"Authorization": f"Bearer {secret}"}
        async with h.client() as c:
            none = await c.post("/api/v1/triggers/order.shipped/fire", json={"entity": deal})
            wrong = await c.post(
                "/api/v1/triggers/order.shipped/fire", json={"entity": deal}, headers={"X-API-Key": "b24r_x_y"}
            )
            scope = await c.post("/api/v1/triggers/payment.received/fire", json={"entity": deal}, headers=hdr)
            tpl = await c.post("/api/v1/workflows/start", json={"template_id": 8, "entity": deal}, headers=hdr)
            unknown = await c.post("/api/v1/triggers/order.shipped/fire", json={"entity": "DEAL_4040"}, headers=hdr)
            bad = await c.post("/api/v1/triggers/order.shipped/fire", json={"entity": "TASK_1"}, headers=hdr)
            ok = await c.post("/api/v1/triggers/order.shipped/fire", json={"entity": deal}, headers=hdr)
            assert [r.status_code for r in (none, wrong, scope, tpl, unknown, bad, ok)] == [
                401,
                401,
                403,
                403,
                422,
                422,
                202,
            ]
            assert "may not fire trigger 'payment.received'" in scope.json()["reason"]
            assert "does not exist" in unknown.json()["reason"]
            h.svc.apikeys.revoke(key.id)
            revoked = await c.post("/api/v1/triggers/order.shipped/fire", json={"entity": deal}, headers=hdr)
            assert revoked.status_code == 401 and "revoked" in revoked.json()["reason"]
            status = await c.get(ok.json()["status_url"], headers=hdr)
            assert status.status_code == 401
        assert len(h.svc.journal.list_calls()) == 1  # only the accepted fire was stored
        assert secret not in str(h.svc.apikeys.all())


async def test_workflow_start_over_http_and_the_openapi_schema(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        deal_id = int(h.portal.add_deal()["ID"])
        tpl = automation.add_template(h.sim, portal=h.portal, owner_type_id=2)
        inst = h.svc.installations.get(h.portal.member_id)
        _key, secret = h.svc.apikeys.create("ERP", inst.id, templates=["*"])
        hdr = {"X-API-Key": secret, "Idempotency-Key": "start-1"}
        body = {"template_id": tpl.id, "entity": f"DEAL_{deal_id}", "parameters": {"Reason": "paid"}}
        async with h.client() as c:
            resp = await c.post("/api/v1/workflows/start", json=body, headers=hdr)
            assert resp.status_code == 202, resp.text
            done = await _until_delivered(h, c, resp.json()["status_url"], hdr)
            (started,) = h.portal.automation.started
            assert done["status"] == "delivered" and done["result"] == started.id
            changed = await c.post("/api/v1/workflows/start", json=body | {"parameters": {"Reason": "x"}}, headers=hdr)
            assert changed.status_code == 409
            schema = (await c.get("/openapi.json")).json()
        paths = schema["paths"]
        assert {"/api/v1/triggers/{code}/fire", "/api/v1/workflows/start", "/api/v1/fires/{entry_id}"} <= set(paths)
        fire = paths["/api/v1/triggers/{code}/fire"]["post"]
        assert "202" in fire["responses"] and "409" in fire["responses"]
        assert any(p["name"] == "idempotency-key" for p in fire["parameters"])
        assert len(h.portal.automation.started) == 1


async def test_cli_creates_lists_and_revokes_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from b24robots.cli import app as cli

    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        deal = f"DEAL_{h.portal.add_deal()['ID']}"
        for k, v in {"B24R_DATA_DIR": str(tmp_path), "B24R_SECRET_KEY": "test-secret-key", "COLUMNS": "200"}.items():
            monkeypatch.setenv(k, v)
        runner = CliRunner()
        created = await asyncio.to_thread(
            runner.invoke, cli, ["api-keys", "create", "1C", "--portal", h.portal.domain, "--trigger", "order.shipped"]
        )
        assert created.exit_code == 0, created.output
        secret = next(w for w in created.output.split() if w.startswith("b24r_"))
        listed = await asyncio.to_thread(runner.invoke, cli, ["api-keys", "list"])
        flat = " ".join(listed.output.split())
        assert "1C" in flat and "order.shipped" in flat and "active" in flat and secret not in listed.output
        async with h.client() as c:
            hdr = {"X-API-Key": secret}
            ok = await c.post("/api/v1/triggers/order.shipped/fire", json={"entity": deal}, headers=hdr)
            assert ok.status_code == 202
            revoked = await asyncio.to_thread(runner.invoke, cli, ["api-keys", "revoke", "1"])
            assert revoked.exit_code == 0 and "revoked" in revoked.output
            refused = await c.post("/api/v1/triggers/order.shipped/fire", json={"entity": deal}, headers=hdr)
            assert refused.status_code == 401
        empty = await asyncio.to_thread(runner.invoke, cli, ["api-keys", "create", "x", "--portal", h.portal.domain])
        assert empty.exit_code == 2 and "may fire nothing" in empty.output
        # both changes are in the audit log in the CLI user's name, the key only by its prefix
        created_entry, revoked_entry = reversed(h.svc.audit.recent(action="api_key."))
        assert (created_entry.action, revoked_entry.action) == ("api_key.create", "api_key.revoke")
        assert created_entry.actor.startswith("cli:") and revoked_entry.actor.startswith("cli:")
        assert created_entry.details["key"] == secret[: len("b24r_") + 9] + "…"
        assert secret not in str(created_entry.details) + str(revoked_entry.details)
