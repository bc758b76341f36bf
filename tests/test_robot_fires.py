"""Robot code fires triggers and starts workflows: module robots and stored code (through the proxy)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from b24robots import Params, RobotContext, Router, String
from b24robots.robots.spec import RobotSpec
from b24robots.store.journal import call_status
from b24robots.testing import automation
from b24robots.testing.app_fixtures import RobotHarness

router = Router()
router.trigger("invoice.paid", name="Invoice paid")


class Out(Params):
    entry = String("Entry")


@router.robot("m.pay", name="Pay", outputs=Out)
async def pay(ctx: RobotContext) -> Out:
    entry = await ctx.fire_trigger("invoice.paid")  # this robot's own deal
    return Out(entry=str(entry))


STORED = """
def run(inputs, ctx):
    entry = ctx.fire_trigger("invoice.paid", ctx.document_id[2])
    try:
        ctx.fire_trigger("nope")
    except ctx.RestError as exc:
        ctx.log("refused: " + exc.description)
    started = ctx.start_workflow(int(inputs["tpl"]))
    return {"entry": str(entry), "started": str(started)}
"""


async def _settle(h: RobotHarness) -> None:
    for _ in range(300):
        calls = h.svc.journal.list_calls()
        if (
            calls
            and all(call_status(c) != "pending" for c in calls)
            and all(w.is_closed for w in h.portal.workflows.values())
        ):
            return
        await asyncio.sleep(0.03)


async def test_module_robot_fires_a_trigger_on_its_deal_once(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        deal_id = int(h.portal.add_deal()["ID"])
        automation.add_rule(h.sim, "invoice.paid", portal=h.portal, stage="WON")
        wf = await h.run_robot("m.pay", document_id=("crm", "CCrmDocumentDeal", f"DEAL_{deal_id}"))
        await _settle(h)
        (fire,) = h.svc.journal.list_calls()
        assert wf.return_values["entry"] == str(fire.id) and fire.origin == "robot"
        assert call_status(fire) == "delivered"
        assert [(f.code, f.owner_id) for f in h.portal.trigger_firings] == [("invoice.paid", deal_id)]
        assert h.portal.deals[deal_id]["STAGE_ID"] == "WON"


async def test_stored_robot_fires_through_the_proxy_and_sees_refusals(tmp_path: Path) -> None:
    from b24robots import Int

    class In(Params):
        tpl = Int("Tpl")

    class SOut(Params):
        entry = String("Entry")
        started = String("Started")

    spec = RobotSpec(code="s.pay", name="Pay", inputs=In.params(), outputs=SOut.params())
    async with RobotHarness(router, data_dir=tmp_path) as h:
        h.svc.register.save(spec, STORED, author="t")
        await h.install()
        deal_id = int(h.portal.add_deal()["ID"])
        tpl = automation.add_template(h.sim, portal=h.portal, owner_type_id=2)
        wf = await h.run_robot(
            "s.pay", document_id=("crm", "CCrmDocumentDeal", f"DEAL_{deal_id}"), properties={"tpl": tpl.id}
        )
        await _settle(h)
        calls = sorted(h.svc.journal.list_calls(), key=lambda c: c.id)
        assert [c.robot_code for c in calls] == ["invoice.paid", f"bp:{tpl.id}"]
        assert wf.return_values["entry"] == str(calls[0].id) and wf.return_values["started"] == str(calls[1].id)
        assert all(call_status(c) == "delivered" for c in calls)
        assert [(f.code, f.owner_id) for f in h.portal.trigger_firings] == [("invoice.paid", deal_id)]
        assert h.portal.automation.started[0].document_id[2] == f"DEAL_{deal_id}"
        (inv,) = [i for i in h.svc.journal.recent() if i.kind == "robot"]
        assert any("refused:" in line and "not declared" in line for line in inv.log)
