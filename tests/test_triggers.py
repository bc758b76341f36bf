"""Triggers and workflow starts: declaration, entity mapping, sync, and fires through the journal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from b24robots import Params, RobotContext, Router, String
from b24robots.errors import DeclarationError, InputError
from b24robots.jobs.outbound import IdempotencyConflict, OutboundError
from b24robots.robots.triggers import Entity, TriggerSpec
from b24robots.store.journal import call_status
from b24robots.testing import automation
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.testing.model import Trigger

router = Router()
PAID = router.trigger("payment.received", name={"en": "Payment received", "ru": "Оплата получена"})
router.trigger("order.shipped", name="Order shipped")


class NoteOut(Params):
    note = String("Note")


@router.robot("t.note", name="Note", outputs=NoteOut)
def note(ctx: RobotContext) -> NoteOut:
    return NoteOut(note=f"paid {ctx.document_id[2]}")


# --------------------------------------------------------------------------- the pure core


@pytest.mark.parametrize(
    ("entity", "key", "cls"),
    [
        (Entity.of("lead", 5), "LEAD_5", "CCrmDocumentLead"),
        (Entity.of("deal", 42), "DEAL_42", "CCrmDocumentDeal"),
        (Entity.of("contact", 3), "CONTACT_3", "CCrmDocumentContact"),
        (Entity.of("company", 4), "COMPANY_4", "CCrmDocumentCompany"),
        (Entity.of("quote", 7), "QUOTE_7", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Quote"),
        (Entity.of("smart_invoice", 3), "SMART_INVOICE_3", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice"),
        (Entity.of("smart", 5, 147), "DYNAMIC_147_5", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"),
    ],
)
def test_entities_map_to_document_ids_and_back(entity: Entity, key: str, cls: str) -> None:
    assert entity.document_id == ["crm", cls, key]
    assert Entity.parse(key) == entity
    assert Entity.from_document_id(entity.document_id) == entity


def test_owner_type_ids_are_bitrix_ones() -> None:
    ids = {k: Entity.of(k, 1).owner_type_id for k in ("lead", "deal", "contact", "company", "quote", "smart_invoice")}
    assert ids == {"lead": 1, "deal": 2, "contact": 3, "company": 4, "quote": 7, "smart_invoice": 31}
    assert Entity.parse("dynamic_1038_9") == Entity(1038, 9)


@pytest.mark.parametrize("bad", ["DEAL", "DEAL_x", "TASK_5", "", "DYNAMIC__5"])
def test_bad_document_ids_say_what_is_expected(bad: str) -> None:
    with pytest.raises(InputError, match=r"DEAL_42|CRM entity"):
        Entity.parse(bad)


def test_bad_entities_and_codes_are_refused_at_declaration() -> None:
    with pytest.raises(InputError, match="owner type 5"):
        Entity(5, 1)
    with pytest.raises(InputError, match="above zero"):
        Entity(2, 0)
    with pytest.raises(DeclarationError, match="invalid"):
        TriggerSpec("bad code!", "x")
    with pytest.raises(DeclarationError, match="name is empty"):
        TriggerSpec("ok", "")
    r = Router()
    r.trigger("Pay", name="x")
    with pytest.raises(DeclarationError, match="twice"):
        r.trigger("pay", name="y")  # codes are case-insensitive on the portal


# --------------------------------------------------------------------------- sync


async def test_sync_registers_renames_and_deletes_triggers(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        regs = {t.code: t.name for t in h.portal.triggers.values()}
        assert regs == {"payment.received": "Payment received", "order.shipped": "Order shipped"}
        # one the portal has that this server never registered: not ours to delete
        h.portal.triggers[(h.app.client_id, "stale")] = Trigger(h.app.client_id, "stale", "Stale")
        # one we registered and the module no longer declares: deleted once confirmed
        smaller = Router()
        for spec in router.triggers():
            if spec.code != "order.shipped":
                smaller.add_trigger(spec)
        for robot in router:
            smaller.add(robot)
        h.svc.registry.router = smaller
        dry = await h.svc.syncer.sync(h.portal.member_id, dry_run=True)
        assert [(c.action, c.kind, c.code) for c in dry.changes] == [
            ("delete", "trigger", "order.shipped"),
            ("keep", "trigger", "stale"),
        ]
        unconfirmed = await h.svc.syncer.sync(h.portal.member_id)
        assert [c.action for c in unconfirmed.changes] == ["keep", "keep"]
        assert (h.app.client_id, "order.shipped") in h.portal.triggers
        report = await h.svc.syncer.sync(h.portal.member_id, confirm=lambda deletes: True)
        assert report.ok and (h.app.client_id, "order.shipped") not in h.portal.triggers
        assert (h.app.client_id, "stale") in h.portal.triggers
        again = await h.svc.syncer.sync(h.portal.member_id)
        assert [(c.action, c.code) for c in again.changes] == [("keep", "stale")]


async def test_trigger_names_follow_the_portals_language(tmp_path: Path) -> None:
    """NAME is one plain string on the portal: ours goes in its language, ru for ua, else English."""
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        member = h.portal.member_id
        paid = (h.app.client_id, "payment.received")
        assert h.portal.triggers[paid].name == "Payment received"
        for lang, want in (("ru", "Оплата получена"), ("ua", "Оплата получена"), ("de", "Payment received")):
            h.svc.installations.set_portal_info(member, language=lang, license="")
            report = await h.svc.syncer.sync(member)
            assert report.ok, report.error
            assert h.portal.triggers[paid].name == want, lang
            # a name without translations stays as declared
            assert h.portal.triggers[(h.app.client_id, "order.shipped")].name == "Order shipped"
        again = await h.svc.syncer.sync(member)  # in step: nothing to rename
        assert [c.code for c in again.changes if c.kind == "trigger" and c.action != "keep"] == []


async def test_portal_without_crm_automation_warns_and_refuses_fires(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        automation.set_automation(h.sim, False, portal=h.portal)
        await h.install()
        report = await h.svc.syncer.sync(h.portal.member_id)
        assert report.ok and "no CRM automation" in report.warnings[0]
        assert "t.note" in {r.code for r in h.portal.registrations.values()}  # robots still registered
        deal = h.portal.add_deal()
        with pytest.raises(OutboundError, match="no CRM automation") as err:
            await h.svc.outbound.fire_trigger(
                h.portal.domain, "payment.received", Entity(2, int(deal["ID"])), origin="t"
            )
        assert err.value.status == 409 and h.svc.journal.list_calls() == []


# --------------------------------------------------------------------------- fires


async def test_fire_moves_the_deal_and_starts_our_robot_exactly_once(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        deal = h.portal.add_deal(STAGE_ID="NEW")
        deal_id = int(deal["ID"])
        automation.add_rule(h.sim, "payment.received", portal=h.portal, stage="WON", robot="t.note")
        fired = await h.svc.outbound.fire_trigger(
            h.portal.domain, "payment.received", Entity(2, deal_id), origin="test", key="pay-1"
        )
        assert fired.created and call_status(fired.entry) == "pending"
        again = await h.svc.outbound.fire_trigger(
            h.portal.domain, "payment.received", Entity(2, deal_id), origin="test", key="pay-1"
        )
        assert not again.created and again.entry.id == fired.entry.id
        await h.until_idle()
        for _ in range(200):
            if h.portal.workflows and all(w.is_closed for w in h.portal.workflows.values()):
                break
            await asyncio.sleep(0.02)
        firings = [f for f in h.portal.trigger_firings if f.code == "payment.received"]
        assert [(f.owner_type_id, f.owner_id) for f in firings] == [(2, deal_id)]
        assert h.portal.deals[deal_id]["STAGE_ID"] == "WON"
        (wf,) = h.portal.workflows.values()
        assert wf.registration.code == "t.note" and wf.return_values["note"] == f"paid DEAL_{deal_id}"
        entry = h.svc.journal.get(fired.entry.id)
        assert call_status(entry) == "delivered" and entry.outputs == {"result": True}


async def test_same_key_with_another_body_is_a_conflict(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        a, b = (int(h.portal.add_deal()["ID"]) for _ in range(2))
        await h.svc.outbound.fire_trigger(h.portal.domain, "payment.received", Entity(2, a), origin="t", key="k")
        with pytest.raises(IdempotencyConflict, match="different request") as err:
            await h.svc.outbound.fire_trigger(h.portal.domain, "payment.received", Entity(2, b), origin="t", key="k")
        assert err.value.status == 409 and len(h.svc.journal.list_calls()) == 1


async def test_bad_fires_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        out = h.svc.outbound
        with pytest.raises(OutboundError, match="not declared") as e1:
            await out.fire_trigger(h.portal.domain, "nope", Entity(2, 1), origin="t")
        with pytest.raises(OutboundError, match="no portal") as e2:
            await out.fire_trigger("elsewhere.bitrix24.com", "payment.received", Entity(2, 1), origin="t")
        with pytest.raises(OutboundError, match=r"deal 999 .* does not exist") as e3:
            await out.fire_trigger(h.portal.domain, "payment.received", Entity(2, 999), origin="t")
        with pytest.raises(OutboundError, match="does not exist"):
            await out.fire_trigger(h.portal.domain, "payment.received", Entity(147, 1), origin="t")
        assert (e1.value.status, e2.value.status, e3.value.status) == (404, 404, 422)
        assert h.svc.journal.list_calls() == [] and h.portal.trigger_firings == []


async def test_fire_survives_a_portal_that_is_briefly_down(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        deal_id = int(h.portal.add_deal()["ID"])
        # the entity check and three attempts of the first batch meet a portal that is down
        h.sim.faults.fail_next(4, status=503, error="", description="Service Unavailable", portal=h.portal.domain)
        fired = await h.svc.outbound.fire_trigger(h.portal.domain, "order.shipped", Entity(2, deal_id), origin="t")
        for _ in range(400):
            if call_status(h.svc.journal.get(fired.entry.id)) != "pending":
                break
            await asyncio.sleep(0.05)
        entry = h.svc.journal.get(fired.entry.id)
        assert call_status(entry) == "delivered", entry.error
        assert entry.deliver_attempts == 2  # one failed batch, one that went through
        assert [(f.code, f.owner_id) for f in h.portal.trigger_firings] == [("order.shipped", deal_id)]


async def test_workflow_start_runs_the_template_and_bad_templates_fail_for_good(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        deal_id = int(h.portal.add_deal()["ID"])
        tpl = automation.add_template(h.sim, portal=h.portal, owner_type_id=2, robot="t.note")
        ok = await h.svc.outbound.start_workflow(
            h.portal.domain, tpl.id, Entity(2, deal_id), {"Reason": "paid"}, origin="t"
        )
        wrong = await h.svc.outbound.start_workflow(h.portal.domain, 999, Entity(2, deal_id), origin="t")
        await h.until_idle()
        (started,) = h.portal.automation.started
        assert started.template_id == tpl.id and started.parameters == {"Reason": "paid"}
        assert started.document_id == ["crm", "CCrmDocumentDeal", f"DEAL_{deal_id}"]
        done = h.svc.journal.get(ok.entry.id)
        assert call_status(done) == "delivered" and done.outputs == {"result": started.id}
        failed = h.svc.journal.get(wrong.entry.id)
        assert call_status(failed) == "failed" and "Template not found" in failed.error
        assert failed.deliver_attempts == 1  # refused for good: not retried
        for _ in range(200):
            if h.portal.workflows and all(w.is_closed for w in h.portal.workflows.values()):
                break
            await asyncio.sleep(0.02)
        (wf,) = h.portal.workflows.values()
        assert wf.registration.code == "t.note" and wf.document_id[2] == f"DEAL_{deal_id}"


# --------------------------------------------------------------------------- the command line


async def test_cli_lists_fires_and_reports_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from b24robots.cli import app as cli
    from b24robots.testing import PortalSimulator, SimulatorServer

    sim = PortalSimulator()
    with SimulatorServer(sim):
        async with RobotHarness(router, data_dir=tmp_path, sim=sim, sandbox=False) as h:
            await h.install()
            deal_id = int(h.portal.add_deal()["ID"])
            automation.add_rule(sim, "order.shipped", portal=h.portal, stage="SHIPPED")
            env = {
                "B24R_DATA_DIR": str(tmp_path),
                "B24R_SECRET_KEY": "test-secret-key",
                "B24R_ALLOW_HTTP_PORTALS": "true",
                "B24R_PUBLIC_URL": "http://robots.example.test",
                "B24R_CLIENT_ID": h.app.client_id,
                "B24R_CLIENT_SECRET": h.app.client_secret,
                "B24R_APP": "tests.test_triggers:router",
                "COLUMNS": "200",
            }
            for k, v in env.items():
                monkeypatch.setenv(k, v)
            runner = CliRunner()

            async def run(*args: str) -> tuple[int, str]:
                result = await asyncio.to_thread(runner.invoke, cli, list(args))
                return result.exit_code, " ".join(result.output.split())

            code, out = await run("triggers", "list")
            assert code == 0 and "payment.received" in out and "registered" in out
            fire = ("triggers", "fire", "order.shipped", "--portal", h.portal.domain, "--deal", str(deal_id))
            code, out = await run(*fire, "--key", "erp-1", "--wait", "10")
            assert code == 0 and "status delivered" in out, out
            code, out = await run(*fire, "--key", "erp-1")
            assert code == 0 and "already stored under this key" in out
            assert [f.owner_id for f in h.portal.trigger_firings] == [deal_id]
            assert h.portal.deals[deal_id]["STAGE_ID"] == "SHIPPED"
            entry_id = h.svc.journal.list_calls()[0].id
            code, out = await run("triggers", "status", str(entry_id))
            assert code == 0 and "status: delivered" in out and f"DEAL_{deal_id}" in out
            code, out = await run("triggers", "fire", "order.shipped", "--portal", h.portal.domain, "--deal", "999")
            assert code == 2 and "deal 999" in out and "does not exist" in out
            code, out = await run("triggers", "fire", "order.shipped", "--portal", h.portal.domain)
            assert code == 2 and "name exactly one entity" in out
            tpl = automation.add_template(sim, portal=h.portal, owner_type_id=2)
            code, out = await run(
                "triggers",
                "start-workflow",
                str(tpl.id),
                "--portal",
                h.portal.domain,
                "--document",
                f"DEAL_{deal_id}",
                "--param",
                "Reason=paid",
                "--wait",
                "10",
            )
            assert code == 0 and "status delivered" in out, out
            assert h.portal.automation.started[0].parameters == {"Reason": "paid"}


async def test_a_burst_is_accepted_at_once_and_its_entities_checked_in_the_batch(tmp_path: Path) -> None:
    import time

    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        deal_id = int(h.portal.add_deal()["ID"])
        inst = h.svc.installations.set_limits(h.portal.member_id, 1.0, 1)
        h.svc.rest.set_rate(inst.member_id, inst.rate, inst.burst)
        while h.svc.buckets.take(inst.member_id, time.time, inst.rate, inst.burst) == 0:
            pass  # take slots until none is free now
        gets_before = sum(1 for c in h.sim.calls if c.method == "crm.item.get")
        good = await h.svc.outbound.fire_trigger(h.portal.domain, "order.shipped", Entity(2, deal_id), origin="t")
        bad = await h.svc.outbound.fire_trigger(h.portal.domain, "order.shipped", Entity(2, 999), origin="t")
        assert sum(1 for c in h.sim.calls if c.method == "crm.item.get") == gets_before  # not asked at once
        assert good.entry.properties["check"] == {"entityTypeId": 2, "id": deal_id}
        for _ in range(300):
            if all(call_status(h.svc.journal.get(e.entry.id)) != "pending" for e in (good, bad)):
                break
            await asyncio.sleep(0.05)
        assert call_status(h.svc.journal.get(good.entry.id)) == "delivered"
        failed = h.svc.journal.get(bad.entry.id)
        assert call_status(failed) == "failed" and f"DEAL_999 does not exist on {h.portal.domain}" in failed.error
        assert failed.deliver_attempts == 1
        assert sum(1 for c in h.sim.calls if c.method == "crm.item.get") == gets_before  # asked inside the batch
