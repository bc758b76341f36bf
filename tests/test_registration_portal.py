"""Registration as a real portal reads it: FILTER, names in every language, codes and keys in any case."""

from __future__ import annotations

from pathlib import Path

import pytest

from b24robots import Params, Router, String
from b24robots.errors import DeclarationError
from b24robots.robots.spec import RobotSpec
from b24robots.testing.app_fixtures import RobotHarness

DEAL = ["crm", "CCrmDocumentDeal", "DEAL"]
LEAD = ["crm", "CCrmDocumentLead", "LEAD"]

router = Router()


class PdfIn(Params):
    entityTypeId = String("Entity type", required=True)


class PdfOut(Params):
    DocUrl = String("Document URL")


@router.robot("PdfFromHtml", name={"de": "PDF aus HTML", "ru": "PDF из HTML"}, inputs=PdfIn, outputs=PdfOut)
def pdf(inputs: PdfIn) -> dict[str, str]:
    # answered with another case than declared: the portal matches RETURN_VALUES keys case-insensitively
    return {"docurl": f"https://files.example.test/{inputs.entityTypeId}.pdf"}


@router.robot("cloud_only", name="Cloud only", filter={"EXCLUDE": ["box"]})
def cloud_only() -> None: ...


@router.robot("deals_only", name="Deals only", filter={"INCLUDE": [["crm", "CCrmDocumentDeal"]]})
def deals_only() -> None: ...


async def test_filter_as_the_portal_applies_it(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        regs = {r.code: r.filter for r in h.portal.registrations.values()}
        assert regs["cloud_only"] == {"EXCLUDE": ["box"]}  # a list of edition rules, not rewritten
        assert set(h.sim.robots_for(DEAL, h.portal)) == {"PdfFromHtml", "cloud_only", "deals_only"}
        assert set(h.sim.robots_for(LEAD, h.portal)) == {"PdfFromHtml", "cloud_only"}
        h.sim.set_features({"bizproc"}, h.portal, edition="box")
        assert set(h.sim.robots_for(DEAL, h.portal)) == {"PdfFromHtml", "deals_only"}


async def test_names_show_on_a_portal_in_any_language(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        for lang, name in (("de", "PDF aus HTML"), ("ua", "PDF из HTML"), ("fr", "PDF aus HTML")):
            assert h.sim.robots_for(DEAL, h.portal, lang=lang)["PdfFromHtml"] == name


async def test_upper_case_code_and_keys_round_trip(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        wf = await h.run_robot("PdfFromHtml", properties={"entityTypeId": "147"})
        assert wf.delivery is not None and wf.delivery.ok
        assert wf.return_values["DocUrl"] == "https://files.example.test/147.pdf"
        (inv,) = h.svc.journal.recent()
        assert inv.outputs == {"DocUrl": "https://files.example.test/147.pdf"}


def test_declarations_refuse_what_the_portal_cannot_tell_apart() -> None:
    with pytest.raises(DeclarationError, match="differ only by case"):
        RobotSpec(code="a", name="A", inputs=(String("One", key="deal"), String("Two", key="Deal")))
    with pytest.raises(DeclarationError, match="not an edition"):
        RobotSpec(code="a", name="A", filter={"INCLUDE": ["crm", "CCrmDocumentDeal"]})


activity_router = Router()


@activity_router.robot("t.robot", name="Robot")
def t_robot() -> None: ...


@activity_router.activity("t.activity", name="Activity")
def t_activity() -> None: ...


async def test_a_portal_without_business_processes_registers_its_robots(tmp_path: Path) -> None:
    async with RobotHarness(activity_router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        # a CRM plan: automation rules, no business processes (no bizproc.activity.*)
        h.sim.set_features({"crm_automation_deal", "crm_automation_lead"}, h.portal)
        await h.install()
        assert [(r.code, r.is_robot) for r in h.portal.registrations.values()] == [("t.robot", True)]
        inst = h.svc.installations.get(h.portal.member_id)
        assert inst.sync_status == "ok" and "t.activity" in inst.sync_error and "business processes" in inst.sync_error
        dry = await h.svc.syncer.sync(h.portal.member_id, dry_run=True)
        assert [(c.action, c.kind, c.code) for c in dry.changes] == [("skip", "activity", "t.activity")]
        assert any("t.activity" in w for w in dry.warnings)
        # the plan is upgraded: the next sync registers the activity and the note goes away
        h.sim.set_features({"bizproc"}, h.portal)
        again = await h.svc.syncer.sync(h.portal.member_id)
        assert again.ok and [(c.action, c.code) for c in again.changes] == [("add", "t.activity")]
        assert h.svc.installations.get(h.portal.member_id).sync_error == ""
