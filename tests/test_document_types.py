"""Robots in every document type a portal runs them in: CRM (smart processes, deal categories), tasks, lists.

Formats: crm `lib/integration/bizproc/document/*.php`, tasks `lib/integration/bizproc/document/task.php`,
b24restdocs `api-reference/bizproc/bizproc-workflow-start.md` (robots/documents.py cites them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from b24robots import Params, RobotContext, Router, String
from b24robots.errors import DeclarationError
from b24robots.robots.documents import DYNAMIC_CLASS, TASK_CLASS, Document, document_type
from b24robots.robots.spec import RobotSpec
from b24robots.testing import automation
from b24robots.testing.app_fixtures import RobotHarness

router = Router()


class In(Params):
    title = String("Title")


class Out(Params):
    before = String("Before")


@router.robot("doc.smart", name="Rename item", inputs=In, outputs=Out, document_type="DYNAMIC_147")
async def rename_item(inputs: In, ctx: RobotContext) -> Out:
    doc = ctx.document
    assert ctx.rest is not None and doc.kind == "crm"
    got = await ctx.rest.call("crm.item.get", {"entityTypeId": doc.entity_type_id, "id": doc.item_id})
    await ctx.rest.call(
        "crm.item.update", {"entityTypeId": doc.entity_type_id, "id": doc.item_id, "fields": {"title": inputs.title}}
    )
    return Out(before=got["item"]["title"])


@router.robot("doc.task", name="Rename task", inputs=In, outputs=Out, document_type="TASK_PROJECT_5")
async def rename_task(inputs: In, ctx: RobotContext) -> Out:
    doc = ctx.document
    assert ctx.rest is not None and doc.kind == "task"
    got = await ctx.rest.call("tasks.task.get", {"taskId": doc.item_id})
    await ctx.rest.call("tasks.task.update", {"taskId": doc.item_id, "fields": {"TITLE": inputs.title}})
    return Out(before=got["task"]["title"])


@router.robot("doc.deal3", name="Deal category 3", document_type="DEAL_C3", use_subscription=False)
def in_category() -> None:
    return None


@pytest.mark.parametrize(
    ("document_id", "kind", "type_id", "item_id"),
    [
        (["crm", "CCrmDocumentLead", "LEAD_7"], "crm", 1, 7),
        (["crm", "CCrmDocumentDeal", "DEAL_12"], "crm", 2, 12),
        (["crm", "CCrmDocumentContact", "CONTACT_3"], "crm", 3, 3),
        (["crm", "CCrmDocumentCompany", "COMPANY_4"], "crm", 4, 4),
        (["crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Quote", "QUOTE_5"], "crm", 7, 5),
        (["crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice", "SMART_INVOICE_6"], "crm", 31, 6),
        (["crm", DYNAMIC_CLASS, "DYNAMIC_147_1"], "crm", 147, 1),
        (["tasks", TASK_CLASS, "42"], "task", None, 42),
        (["lists", "BizprocDocument", "9"], "list", None, 9),
        (["disk", "Bitrix\\Disk\\BizProcDocument", "x"], "other", None, None),
    ],
)
def test_document_ids_of_every_module_parse(
    document_id: list[str], kind: str, type_id: int | None, item_id: int | None
) -> None:
    doc = Document.parse(document_id)
    assert (doc.kind, doc.entity_type_id, doc.item_id) == (kind, type_id, item_id)
    assert doc.document_id == document_id


def test_short_document_types_expand_and_nonsense_is_refused() -> None:
    assert document_type("DEAL_C3") == ("crm", "CCrmDocumentDeal", "DEAL_C3")
    assert document_type("dynamic_147") == ("crm", DYNAMIC_CLASS, "DYNAMIC_147")
    with pytest.raises(DeclarationError, match="not a known type"):
        document_type("LEAD_C3")  # only deals have categories in the type
    assert document_type("SMART_INVOICE")[2] == "SMART_INVOICE"
    assert document_type("TASK_PROJECT_5") == ("tasks", TASK_CLASS, "TASK_PROJECT_5")
    assert document_type("TASK_PLAN_1") == ("tasks", TASK_CLASS, "TASK_PLAN_1")
    assert document_type("iblock_12") == ("lists", "BizprocDocument", "iblock_12")
    assert document_type(["lists", "Bitrix\\Lists\\BizprocDocumentLists", "iblock_3"])[2] == "iblock_3"
    with pytest.raises(DeclarationError, match="not a known type"):
        document_type("DEALS")
    with pytest.raises(DeclarationError, match="three texts"):
        RobotSpec(code="x", name="X", document_type=["crm", "CCrmDocumentDeal"])  # type: ignore[arg-type]


async def test_robots_on_a_smart_process_item_and_a_task_update_them_over_rest(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        h.app.scopes = (*h.app.scopes, "task")
        await h.install()
        regs = {r.code: r for r in h.portal.registrations.values()}
        assert regs["doc.smart"].document_type == ["crm", DYNAMIC_CLASS, "DYNAMIC_147"]
        assert regs["doc.task"].document_type == ["tasks", TASK_CLASS, "TASK_PROJECT_5"]
        assert regs["doc.deal3"].document_type == ["crm", "CCrmDocumentDeal", "DEAL_C3"]

        item = automation.add_item(h.sim, 147, portal=h.portal, title="Old item")
        wf = await h.run_robot(
            "doc.smart",
            document_id=("crm", DYNAMIC_CLASS, f"DYNAMIC_147_{item['id']}"),
            properties={"title": "New item"},
        )
        assert wf.document_type == ["crm", DYNAMIC_CLASS, "DYNAMIC_147"]
        assert wf.return_values["before"] == "Old item"
        assert h.portal.automation.items[(147, item["id"])]["title"] == "New item"
        listed = await h.svc.rest.call(h.portal.member_id, "crm.item.list", {"entityTypeId": 147})
        assert [i["title"] for i in listed["items"]] == ["New item"]

        task = automation.add_task(h.sim, portal=h.portal, title="Old task", groupId="5")
        wf = await h.run_robot(
            "doc.task",
            document_id=("tasks", TASK_CLASS, task["id"]),
            document_type=("tasks", TASK_CLASS, "TASK_PROJECT_5"),
            properties={"title": "New task"},
        )
        assert wf.return_values["before"] == "Old task"
        assert h.portal.automation.tasks[int(task["id"])]["title"] == "New task"
        (task_inv,) = [i for i in h.svc.journal.recent(limit=10) if i.robot_code == "doc.task"]
        assert task_inv.document_id == ["tasks", TASK_CLASS, task["id"]]
        assert task_inv.document_type == ["tasks", TASK_CLASS, "TASK_PROJECT_5"]
        assert task_inv.state == "delivered"
