"""Triggers declared in the register (CLI), end to end: sync registers them on the simulator served over
HTTP beside the module's, fires through /api/v1 and the CLI reach it once each, a rename and a removal
reach the portal at the next sync, and a CODE in both places is refused with both named."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from b24robots import Router
from b24robots.cli import app as cli
from b24robots.testing import PortalSimulator, SimulatorServer
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.testing.model import Trigger

router = Router()
router.trigger("order.shipped", name="Order shipped")

later = Router()  # the same module after someone also declared, in Python, a CODE the register has
later.trigger("order.shipped", name="Order shipped")
later.trigger("payment.received", name="Paid (module)")


@pytest.fixture
def sim() -> Iterator[PortalSimulator]:
    simulator = PortalSimulator()
    with SimulatorServer(simulator):
        yield simulator


def cli_env(h: RobotHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: str) -> None:
    env = {
        "B24R_DATA_DIR": str(tmp_path),
        "B24R_SECRET_KEY": "test-secret-key",
        "B24R_ALLOW_HTTP_PORTALS": "true",
        "B24R_PUBLIC_URL": "http://robots.example.test",
        "B24R_CLIENT_ID": h.app.client_id,
        "B24R_CLIENT_SECRET": h.app.client_secret,
        "B24R_APP": app,
        "COLUMNS": "250",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)


async def run(*args: str) -> tuple[int, str]:
    """Exit code and output with table borders and line breaks taken out."""
    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args))
    text = "".join(" " if 0x2500 <= ord(ch) <= 0x257F else ch for ch in result.output)
    return result.exit_code, " ".join(text.split())


async def portal_list(h: RobotHarness) -> dict[str, str]:
    """What the portal answers to crm.automation.trigger.list, asked over HTTP."""
    rows = await h.svc.rest.call(h.portal.member_id, "crm.automation.trigger.list")
    return {r["CODE"]: r["NAME"] for r in rows}


async def test_a_register_trigger_is_synced_fired_renamed_and_removed(
    sim: PortalSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = "tests.test_register_triggers:router"
    async with RobotHarness(router, data_dir=tmp_path, sim=sim, sandbox=False, settings={"cache_seconds": 0}) as h:
        await h.install()
        cli_env(h, tmp_path, monkeypatch, app)
        assert await portal_list(h) == {"order.shipped": "Order shipped"}
        h.portal.triggers[(h.app.client_id, "foreign")] = Trigger(h.app.client_id, "foreign", "Not ours")

        code, out = await run(
            "triggers", "add", "payment.received", "--name", "Payment received", "--name-ru", "Оплата"
        )
        assert code == 0 and "added trigger payment.received: version 1" in out and "b24robots sync" in out, out
        code, out = await run("sync", "--dry-run")
        assert code == 0 and "add trigger payment.received" in out, out
        assert "payment.received" not in await portal_list(h)
        code, out = await run("sync", "--yes")
        assert code == 0 and "1 added" in out, out
        assert await portal_list(h) == {
            "order.shipped": "Order shipped",
            "payment.received": "Payment received",
            "foreign": "Not ours",
        }
        code, out = await run("triggers", "list")
        assert code == 0, out
        assert "order.shipped Order shipped module registered" in out
        assert "payment.received Payment received register registered" in out

        deal_id = int(h.portal.add_deal()["ID"])
        inst = h.svc.installations.get(h.portal.member_id)
        _key, secret = h.svc.apikeys.create("1C", inst.id, triggers=["payment.received"])
        async with h.client() as c:
            auth = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "pay-1"}
            url = "/api/v1/triggers/payment.received/fire"
            first = await c.post(url, json={"entity": f"DEAL_{deal_id}"}, headers=auth)
            again = await c.post(url, json={"entity": f"DEAL_{deal_id}"}, headers=auth)  # the 1C retries
            assert first.status_code == 202 and again.json()["id"] == first.json()["id"], first.text
        fire = ("triggers", "fire", "payment.received", "--portal", h.portal.domain, "--deal", str(deal_id))
        code, out = await run(*fire, "--key", "cli-1", "--wait", "10")
        assert code == 0 and "status delivered" in out, out
        await h.until_idle()
        assert [(f.code, f.owner_id) for f in h.portal.trigger_firings] == [("payment.received", deal_id)] * 2

        code, out = await run("triggers", "set", "payment.received", "--name", "Paid")
        assert code == 0 and "version 2" in out, out
        code, out = await run("triggers", "list")
        assert "changed (next sync renames it)" in out, out
        code, out = await run("sync", "--yes")
        assert code == 0 and "1 updated" in out, out
        assert (await portal_list(h))["payment.received"] == "Paid"

        code, out = await run("triggers", "remove", "payment.received")  # the runner's input is no terminal
        assert code == 2 and "add --yes" in out and "payment.received" in await portal_list(h), out
        code, out = await run("triggers", "remove", "payment.received", "--yes")
        assert code == 0 and "removed trigger payment.received" in out, out
        code, out = await run("sync", "--dry-run")
        assert "payment.received" in out and "removed from the register" in out, out
        code, out = await run("sync", "--yes")
        assert code == 0 and "1 deleted" in out, out
        assert await portal_list(h) == {"order.shipped": "Order shipped", "foreign": "Not ours"}  # not ours: kept
        versions = [v.number for v in h.svc.trigger_register.versions("payment.received")]
        assert versions == [1, 2]
        actions = [e.action for e in reversed(h.svc.audit.recent(action="trigger.")) if e.target == "payment.received"]
        assert actions[:3] == ["trigger.add", "trigger.change", "trigger.remove"]


async def test_a_code_in_python_and_in_the_register_is_refused_in_both_places(
    sim: PortalSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with RobotHarness(
        router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False, settings={"cache_seconds": 0}
    ) as h:
        await h.install()
        cli_env(h, tmp_path, monkeypatch, "tests.test_register_triggers:router")
        code, out = await run("triggers", "add", "Order.Shipped", "--name", "Mine")
        assert code == 2 and "declared in the robots module (router.trigger) already" in out, out
        assert "Traceback" not in out and h.svc.trigger_register.triggers() == []
        code, out = await run("triggers", "add", "payment.received", "--name", "Paid (register)")
        assert code == 0, out
        await h.svc.syncer.sync(h.portal.member_id)
        assert (await portal_list(h))["payment.received"] == "Paid (register)"
        # the module declares the register's CODE later: sync leaves that trigger as it is and says why
        cli_env(h, tmp_path, monkeypatch, "tests.test_register_triggers:later")
        code, out = await run("sync", "--yes")
        assert code == 0, out
        assert "both in the robots module (router.trigger) and in the register" in out
        assert "b24robots triggers remove payment.received" in out
        assert (await portal_list(h))["payment.received"] == "Paid (register)"
        code, out = await run("triggers", "list")
        assert "module + register (clash)" in out, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "bad code!", "--name", "x"], "is invalid; use latin letters"),
        (["add", "a" * 129, "--name", "x"], "at most 128"),
        (["add", "ok.code", "--name", "  "], "--name is empty"),
        (["add", "ok.code"], "needs a name; pass --name"),
        (["add", "ok.code", "--name", "x", "--name-ru", ""], "--name-ru is empty"),
        (["set", "nope", "--name", "x"], "no register trigger 'nope'"),
        (["set", "nope"], "nothing to change"),
        (["remove", "nope", "--yes"], "no register trigger 'nope'"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24R_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("B24R_SECRET_KEY", "test-secret-key")
    monkeypatch.setenv("B24R_APP", "")
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(cli, ["triggers", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


async def test_the_triggers_page_adds_renames_and_removes_register_triggers(
    sim: PortalSimulator, tmp_path: Path
) -> None:
    from b24robots.store.users import Users
    from tests.ui_helpers import PASSWORD, csrf_of, sign_in

    async with RobotHarness(router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        async with h.client() as c:
            csrf = await sign_in(c)
            form = {"csrf": csrf, "code": "payment.received", "name_en": "Payment received", "name_ru": "Оплата"}
            bad = await c.post("/admin/triggers/add", data={**form, "code": "bad code!"})
            assert bad.status_code == 422 and "is invalid" in bad.text
            clash = await c.post("/admin/triggers/add", data={**form, "code": "order.shipped"})
            assert clash.status_code == 422 and "declared in the robots module" in clash.text
            unnamed = await c.post("/admin/triggers/add", data={**form, "name_en": " ", "name_ru": ""})
            assert unnamed.status_code == 422 and "Give the trigger a name" in unnamed.text
            added = await c.post("/admin/triggers/add", data=form)
            assert added.status_code == 303, added.text
            page = await c.get("/admin/triggers")
            assert "Trigger payment.received is added" in page.text
            assert 'data-source="register"' in page.text and 'data-source="module"' in page.text
            assert 'data-state="missing"' in page.text
            await h.svc.syncer.sync(h.portal.member_id, origin="ui")
            assert (await portal_list(h))["payment.received"] == "Payment received"
            page = await c.get("/admin/triggers")
            assert 'data-state="missing"' not in page.text
            renamed = await c.post(
                "/admin/triggers/payment.received/edit", data={"csrf": csrf, "name_en": "Paid", "name_ru": "Оплачено"}
            )
            assert renamed.status_code == 303
            page = await c.get("/admin/triggers")
            assert "version 2 is saved" in page.text and 'data-state="changed"' in page.text
            ask = await c.post("/admin/triggers/payment.received/remove", data={"csrf": csrf})
            assert ask.status_code == 200 and "Remove trigger payment.received?" in ask.text
            assert h.svc.trigger_register.exists("payment.received")  # asking removes nothing
            done = await c.post(
                "/admin/triggers/payment.received/remove", data={"csrf": csrf_of(ask.text), "confirmed": "1"}
            )
            assert done.status_code == 303 and not h.svc.trigger_register.exists("payment.received")
            report = await h.svc.syncer.sync(h.portal.member_id, origin="ui")  # retired: no confirmation needed
            assert [(ch.action, ch.code) for ch in report.changes] == [("delete", "payment.received")]
            assert "payment.received" not in await portal_list(h)
            audit = [(e.action, e.actor) for e in reversed(h.svc.audit.recent(action="trigger."))]
            assert audit == [("trigger.add", "anna"), ("trigger.change", "anna"), ("trigger.remove", "anna")]
