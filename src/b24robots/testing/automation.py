"""CRM automation on the simulated portal: what a trigger fires and what a workflow start runs.

Importing this module installs its REST methods into the simulator's method table:

- `crm.automation.trigger.*` answer `ERROR_METHOD_NOT_FOUND` on a portal without CRM automation
  (the feature is off on its plan: the method is not in the REST description, as for `bizproc.*`,
  protocol §9.2 — UNCONFIRMED for this scope in the cloud), otherwise as `restapi.py` implements them;
  after `crm.automation.trigger.execute` answered `true`, the portal applies the automation rules bound
  to the trigger: the entity moves to the rule's stage and/or a robot starts on it. The answer itself
  never says whether a rule applied (b24restdocs `api-reference/crm/automation/triggers/
  crm-automation-trigger-execute.md`), and an entity that does not exist changes nothing.
- `crm.item.get {entityTypeId, id}` answers `{"item": {...}}`, or `NOT_FOUND` "Item not found" /
  "SPA not found" (b24restdocs `api-reference/crm/universal/crm-item-get.md`).
- `crm.item.list {entityTypeId, filter, start}` answers `{"items": [...]}` with `total`/`next` (50 a page),
  `crm.item.update {entityTypeId, id, fields}` changes the given fields and answers `{"item": {...}}`
  (b24restdocs `api-reference/crm/universal/crm-item-list.md`, `crm-item-update.md`).
- `tasks.task.get {taskId}` answers `{"task": {...}}` (camelCase keys), `tasks.task.update {taskId, fields}`
  takes UPPER_CASE field names (`TITLE`, `DESCRIPTION`, ...) and answers `{"task": {...}}`; an unknown task is
  an error (b24restdocs `api-reference/tasks/tasks-task-get.md`, `tasks-task-update.md`; the `ERROR_CORE`
  code is UNCONFIRMED).
- `bizproc.workflow.start {TEMPLATE_ID, DOCUMENT_ID, PARAMETERS}` checks in the order of
  yuliai/bitrix-modules `bizproc/classes/general/restservice.php::startWorkflow`: `ERROR_WRONG_WORKFLOW_ID`
  "Empty TEMPLATE_ID" / "Template not found", then "Wrong DOCUMENT_ID!", "Incorrect document type!",
  "Template type and DOCUMENT_ID mismatch!" (empty error code); it answers the new workflow's id and
  runs the template (its robot, if it has one) after answering.

Set it up with `add_rule`, `add_template`, `add_item`, `set_automation` below.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from b24robots.errors import MethodError, MethodNotFound

from ._util import php_empty, upper_keys
from .automation_model import AutomationRule, SimTemplate, StartedWorkflow
from .model import Portal
from .registration import php_intval
from .restapi import METHODS, Caller, MethodResult, MethodSpec

if TYPE_CHECKING:
    from .simulator import PortalSimulator

# owner type id -> (document id prefix, document class), as b24restdocs bizproc-workflow-start.md lists them
DOCUMENTS: dict[int, tuple[str, str]] = {
    1: ("LEAD", "CCrmDocumentLead"),
    2: ("DEAL", "CCrmDocumentDeal"),
    3: ("CONTACT", "CCrmDocumentContact"),
    4: ("COMPANY", "CCrmDocumentCompany"),
    7: ("QUOTE", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Quote"),
    31: ("SMART_INVOICE", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice"),
}
DYNAMIC_CLASS = "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"
_KEY = re.compile(r"^(?:DYNAMIC_(\d+)|([A-Z_]+?))_(\d+)$")


def document_id(owner_type_id: int, owner_id: int) -> list[str]:
    if owner_type_id in DOCUMENTS:
        prefix, cls = DOCUMENTS[owner_type_id]
        return ["crm", cls, f"{prefix}_{owner_id}"]
    return ["crm", DYNAMIC_CLASS, f"DYNAMIC_{owner_type_id}_{owner_id}"]


def parse_document(value: Any) -> tuple[int, int] | None:
    """(owner type id, id) of a CRM document id, or None."""
    if not isinstance(value, list | tuple | Mapping) or len(value) != 3:
        return None
    parts = list(value.values()) if isinstance(value, Mapping) else list(value)
    if parts[0] != "crm" or not isinstance(parts[2], str):
        return None
    m = _KEY.match(parts[2])
    if m is None:
        return None
    dynamic, prefix, ident = m.groups()
    if dynamic is not None:
        return int(dynamic), int(ident)
    by_prefix = {p: t for t, (p, _c) in DOCUMENTS.items()}
    return (by_prefix[prefix], int(ident)) if prefix in by_prefix else None


# ---------------------------------------------------------------- set-up helpers for tests and the demo


def add_rule(
    sim: PortalSimulator,
    trigger: str,
    *,
    portal: Portal | str | None = None,
    owner_type_id: int = 2,
    stage: str | None = None,
    robot: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> AutomationRule:
    """Bind app trigger `trigger` to a stage move and/or a robot on entities of `owner_type_id`."""
    rule = AutomationRule(trigger, owner_type_id, stage, robot, dict(properties or {}))
    with sim._lock:
        sim.portal(portal).automation.rules.append(rule)
    return rule


def add_template(
    sim: PortalSimulator,
    *,
    portal: Portal | str | None = None,
    owner_type_id: int = 2,
    name: str = "Business process",
    robot: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> SimTemplate:
    """A business-process template for documents of `owner_type_id`; returns it (its `id` is TEMPLATE_ID)."""
    with sim._lock:
        auto = sim.portal(portal).automation
        tpl = SimTemplate(auto.next_template_id, owner_type_id, name, robot, dict(properties or {}))
        auto.templates[tpl.id] = tpl
        auto.next_template_id += 1
    return tpl


def add_item(
    sim: PortalSimulator, owner_type_id: int, *, portal: Portal | str | None = None, **fields: Any
) -> dict[str, Any]:
    """Add a CRM item other than a deal (deals: `Portal.add_deal`); returns it with its `id`."""
    with sim._lock:
        p = sim.portal(portal)
        auto = p.automation
        ident = 1 + max((i for t, i in auto.items if t == owner_type_id), default=0)
        item = {"id": ident, "entityTypeId": owner_type_id, "stageId": "NEW", "title": f"Item #{ident}"} | fields
        auto.items[(owner_type_id, ident)] = item
    return item


def add_task(sim: PortalSimulator, *, portal: Portal | str | None = None, **fields: Any) -> dict[str, Any]:
    """Add a task (camelCase fields as tasks.task.get shows them); returns it with its `id`."""
    with sim._lock:
        tasks = sim.portal(portal).automation.tasks
        ident = 1 + max(tasks, default=0)
        task = {"id": str(ident), "title": f"Task #{ident}", "description": "", "status": "2", "groupId": "0"}
        task |= {"responsibleId": "1", "createdBy": "1"} | fields
        tasks[ident] = task
    return task


def set_automation(sim: PortalSimulator, enabled: bool, *, portal: Portal | str | None = None) -> None:
    """Turn the portal's CRM automation feature on or off (a plan without it)."""
    with sim._lock:
        sim.portal(portal).automation.enabled = enabled


# ---------------------------------------------------------------- CRM items


def _item(portal: Portal, owner_type_id: int, owner_id: int) -> dict[str, Any] | None:
    if owner_type_id == 2:
        deal = portal.deals.get(owner_id)
        if deal is None:
            return None
        return {"id": owner_id, "entityTypeId": 2, "title": deal["TITLE"], "stageId": deal["STAGE_ID"]}
    return portal.automation.items.get((owner_type_id, owner_id))


def _item_get(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    type_id = php_intval(params.get("entityTypeId", params.get("ENTITYTYPEID")))
    ident = php_intval(params.get("id", params.get("ID")))
    portal = caller.portal
    known_types = set(DOCUMENTS) | {t for t, _i in portal.automation.items}
    if type_id not in known_types:
        raise MethodError("NOT_FOUND", "SPA not found", status=400)
    item = _item(portal, type_id, ident)
    if item is None:
        raise MethodError("NOT_FOUND", "Item not found", status=400)
    return MethodResult({"item": dict(item)})


def _item_list(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    type_id = php_intval(params.get("entityTypeId", params.get("ENTITYTYPEID")))
    portal = caller.portal
    if type_id not in set(DOCUMENTS) | {t for t, _i in portal.automation.items}:
        raise MethodError("NOT_FOUND", "SPA not found", status=400)
    ids = sorted(i for t, i in portal.automation.items if t == type_id)
    if type_id == 2:
        ids = sorted(portal.deals)
    wanted = params.get("filter")
    rows = [item for i in ids if (item := _item(portal, type_id, i)) is not None]
    if isinstance(wanted, Mapping):  # equality on the given fields only ("=id", "stageId", ...)
        rows = [r for r in rows if all(str(r.get(str(k).lstrip("="))) == str(v) for k, v in wanted.items())]
    start = max(0, php_intval(params.get("start")))
    page = rows[start : start + 50]
    more = start + 50 < len(rows)
    return MethodResult({"items": page}, total=len(rows), next=start + 50 if more else None)


def _item_update(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    type_id = php_intval(params.get("entityTypeId", params.get("ENTITYTYPEID")))
    ident = php_intval(params.get("id", params.get("ID")))
    portal = caller.portal
    if type_id not in set(DOCUMENTS) | {t for t, _i in portal.automation.items}:
        raise MethodError("NOT_FOUND", "SPA not found", status=400)
    if _item(portal, type_id, ident) is None:
        raise MethodError("NOT_FOUND", "Item not found", status=400)
    fields = params.get("fields")
    if not isinstance(fields, Mapping):
        raise MethodError("INVALID_ARG_VALUE", "fields must be an object", status=400)
    if type_id == 2:
        deal = portal.deals[ident]
        for key, value in fields.items():
            name = {"title": "TITLE", "stageId": "STAGE_ID", "opportunity": "OPPORTUNITY"}.get(str(key), str(key))
            deal[name] = str(value)
    else:
        item = portal.automation.items[(type_id, ident)]
        item.update({str(k): v for k, v in fields.items() if str(k) not in ("id", "entityTypeId")})
    return MethodResult({"item": dict(_item(portal, type_id, ident) or {})})


_TASK_FIELDS = {"TITLE": "title", "DESCRIPTION": "description", "STATUS": "status", "RESPONSIBLE_ID": "responsibleId"}


def _task(portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    ident = php_intval(params.get("taskId", params.get("TASKID")))
    task = portal.automation.tasks.get(ident)
    if task is None:
        raise MethodError("ERROR_CORE", "TASKS_ERROR_EXCEPTION_#256; Task not found or not accessible", status=400)
    return task


def _task_get(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    return MethodResult({"task": dict(_task(caller.portal, params))})


def _task_update(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    task = _task(caller.portal, params)
    fields = params.get("fields")
    if not isinstance(fields, Mapping):
        raise MethodError("ERROR_CORE", "fields must be an object", status=400)
    for key, value in fields.items():
        name = _TASK_FIELDS.get(str(key).upper(), str(key))
        task[name] = str(value)
    return MethodResult({"task": dict(task)})


def _move(portal: Portal, owner_type_id: int, owner_id: int, stage: str) -> None:
    if owner_type_id == 2:
        portal.deals[owner_id]["STAGE_ID"] = stage
    else:
        portal.automation.items[(owner_type_id, owner_id)]["stageId"] = stage


# ---------------------------------------------------------------- triggers


def _needs_automation(spec: MethodSpec) -> MethodSpec:
    def method(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
        if not caller.portal.automation.enabled:
            raise MethodNotFound("ERROR_METHOD_NOT_FOUND", "Method not found!", status=404)
        return spec.fn(sim, caller, params)

    return MethodSpec(method, spec.scopes)


def _execute_with_rules(inner: MethodSpec) -> MethodSpec:
    def method(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
        outcome = inner.fn(sim, caller, params)
        firing = caller.portal.trigger_firings[-1]
        portal = caller.portal

        def apply() -> None:
            with sim._lock:
                if _item(portal, firing.owner_type_id, firing.owner_id) is None:
                    return  # `true` was answered, but there is nothing to move
                robots = []
                for rule in portal.automation.rules:
                    if rule.trigger.lower() != firing.code.lower() or rule.owner_type_id != firing.owner_type_id:
                        continue
                    rule.fired += 1
                    if rule.stage:
                        _move(portal, firing.owner_type_id, firing.owner_id, rule.stage)
                    if rule.robot:
                        robots.append(rule)
            for rule in robots:
                _start(
                    sim, portal, rule.robot or "", document_id(firing.owner_type_id, firing.owner_id), rule.properties
                )

        return MethodResult(outcome.result, after=[*outcome.after, apply])

    return MethodSpec(method, inner.scopes)


def _start(sim: PortalSimulator, portal: Portal, robot: str, doc: list[str], properties: dict[str, Any]) -> None:
    task = asyncio.ensure_future(
        sim.start_robot(portal, robot, document_id=doc, properties=properties, wait_delivery=True)
    )
    sim._tasks.add(task)
    task.add_done_callback(sim._tasks.discard)


# ---------------------------------------------------------------- bizproc.workflow.start


def _workflow_start(sim: PortalSimulator, caller: Caller, params: dict[str, Any]) -> MethodResult:
    data = upper_keys(params)
    if php_empty(data.get("TEMPLATE_ID")):
        raise MethodError("ERROR_WRONG_WORKFLOW_ID", "Empty TEMPLATE_ID", status=400)
    portal = caller.portal
    tpl = portal.automation.templates.get(php_intval(data.get("TEMPLATE_ID")))
    if tpl is None:
        raise MethodError("ERROR_WRONG_WORKFLOW_ID", "Template not found", status=400)
    raw = data.get("DOCUMENT_ID")
    if not isinstance(raw, list | tuple | Mapping) or len(raw) != 3:
        raise MethodError("", "Wrong DOCUMENT_ID!", status=400)
    parsed = parse_document(raw)
    if parsed is None:
        raise MethodError("", "Incorrect document type!", status=400)
    owner_type_id, owner_id = parsed
    if owner_type_id != tpl.owner_type_id:
        raise MethodError("", "Template type and DOCUMENT_ID mismatch!", status=400)
    if not caller.is_admin:
        raise MethodError("ACCESS_DENIED", "Access denied!", status=403)
    given = data.get("PARAMETERS")
    parameters = dict(given) if isinstance(given, Mapping) else {}
    wf_id = f"{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"
    doc = document_id(owner_type_id, owner_id)
    portal.automation.started.append(StartedWorkflow(wf_id, tpl.id, doc, parameters, sim.now()))

    def run() -> None:
        if tpl.robot:
            _start(sim, portal, tpl.robot, doc, tpl.properties)

    return MethodResult(wf_id, after=[run])


for _name in ("add", "list", "delete"):
    METHODS[f"crm.automation.trigger.{_name}"] = _needs_automation(METHODS[f"crm.automation.trigger.{_name}"])
METHODS["crm.automation.trigger.execute"] = _needs_automation(
    _execute_with_rules(METHODS["crm.automation.trigger.execute"])
)
METHODS["crm.item.get"] = MethodSpec(_item_get, ("crm",))
METHODS["crm.item.list"] = MethodSpec(_item_list, ("crm",))
METHODS["crm.item.update"] = MethodSpec(_item_update, ("crm",))
METHODS["tasks.task.get"] = MethodSpec(_task_get, ("task",))
METHODS["tasks.task.update"] = MethodSpec(_task_update, ("task",))
METHODS["bizproc.workflow.start"] = MethodSpec(_workflow_start, ("bizproc",))

__all__ = ["add_item", "add_rule", "add_task", "add_template", "document_id", "parse_document", "set_automation"]
