"""Document types and document ids a robot can run on, as the portal's modules name them.

A document id is `[module, entity class, key]`; a document type is the same triple with the type in
the last place. The modules that run robots (b24restdocs `api-reference/bizproc/bizproc-workflow-start.md`,
protocol §9.3):

- CRM (crm `lib/integration/bizproc/document/*.php`): keys `LEAD_1`, `DEAL_1`, `CONTACT_1`, `COMPANY_1`,
  `QUOTE_1`, `SMART_INVOICE_1`, smart-process items `DYNAMIC_147_1`; types `LEAD`, `DEAL`, deal
  categories `DEAL_C3`, `DYNAMIC_147`, ...
- Tasks (tasks `lib/integration/bizproc/document/task.php`): the key is the bare task id (`42`), the
  type `TASK_PROJECT_<group>`, `TASK_SCRUM_PROJECT_<group>`, `TASK_PLAN_<user>` or `TASK_USER_<user>`
  (`resolveProjectTaskType`, `resolveScrumProjectTaskType`, `resolvePlanId`, `resolvePersonId`).
- Lists (`['lists', 'BizprocDocument', 'iblock_<id>']`, or `Bitrix\\Lists\\BizprocDocumentLists` for
  processes): the key is the element id, the type `iblock_<list id>`.

`Document.parse` never refuses: a key it does not know is kept as it is (`kind == "other"`), because
a portal may run robots in modules this table does not list. `document_type()` expands the short
forms a declaration may use (`"DEAL_C3"`, `"DYNAMIC_147"`, `"iblock_12"`, `"TASK_PROJECT_5"`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from b24robots.errors import DeclarationError
from b24robots.fields import as_int

CRM_CLASSES = {
    "LEAD": "CCrmDocumentLead",
    "DEAL": "CCrmDocumentDeal",
    "CONTACT": "CCrmDocumentContact",
    "COMPANY": "CCrmDocumentCompany",
    "QUOTE": "Bitrix\\Crm\\Integration\\BizProc\\Document\\Quote",
    "SMART_INVOICE": "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice",
}
CRM_TYPE_IDS = {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4, "QUOTE": 7, "SMART_INVOICE": 31}
DYNAMIC_CLASS = "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"
TASK_CLASS = "Bitrix\\Tasks\\Integration\\Bizproc\\Document\\Task"
LISTS_CLASS = "BizprocDocument"

# re.ASCII: \d is 0-9 only (fields.py says why)
_CRM_KEY = re.compile(
    r"^(?:DYNAMIC_(\d+)|(LEAD|DEAL|CONTACT|COMPANY|QUOTE|SMART_INVOICE))_(\d+)$", re.IGNORECASE | re.ASCII
)
_CRM_TYPE = re.compile(
    r"^(?:DYNAMIC_(\d+)|(LEAD|CONTACT|COMPANY|QUOTE|SMART_INVOICE)|(DEAL)(?:_C\d+)?)$", re.IGNORECASE | re.ASCII
)
_TASK_TYPE = re.compile(r"^TASK(?:_(?:PROJECT|SCRUM_PROJECT|PLAN|USER)_\d+)?$", re.IGNORECASE | re.ASCII)
_LIST_TYPE = re.compile(r"^iblock_\d+$", re.IGNORECASE | re.ASCII)

Kind = Literal["crm", "task", "list", "other"]


@dataclass(frozen=True)
class Document:
    """One document a robot runs on.

    For CRM `entity_type_id` and `item_id` are what `crm.item.get/update` take (`DYNAMIC_147_5` → 147, 5);
    for a task `item_id` is the task id (`tasks.task.get {taskId}`); for a list the element id.
    """

    module: str
    entity: str
    key: str
    kind: Kind = "other"
    entity_type_id: int | None = None
    item_id: int | None = None

    @classmethod
    def parse(cls, document_id: Any) -> Document:
        parts = [str(p) for p in document_id] if isinstance(document_id, list | tuple) else []
        if len(parts) != 3:
            return cls("", "", "")
        module, entity, key = parts
        if module == "crm" and (m := _CRM_KEY.match(key)):
            dynamic, prefix, ident = m.groups()
            type_id = int(dynamic) if dynamic is not None else CRM_TYPE_IDS[prefix.upper()]
            return cls(module, entity, key, "crm", type_id, int(ident))
        number = as_int(key)  # "²".isdigit() is true and int("²") raises
        if module == "tasks" and number is not None:
            return cls(module, entity, key, "task", None, number)
        if module == "lists" and number is not None:
            return cls(module, entity, key, "list", None, number)
        return cls(module, entity, key)

    @property
    def document_id(self) -> list[str]:
        return [self.module, self.entity, self.key]


def document_type(value: object) -> tuple[str, str, str]:
    """A declared DOCUMENT_TYPE: a full triple as given, or the short form of its last part expanded."""
    if isinstance(value, list | tuple):
        if len(value) != 3 or not all(isinstance(v, str) and v for v in value):
            raise DeclarationError(
                "document_type must be three texts [module, entity, type], e.g. ['crm', 'CCrmDocumentDeal', 'DEAL'],"
                f" or a type such as 'DEAL_C3', 'DYNAMIC_147', 'TASK_PROJECT_5', 'iblock_12'; got {value!r}"
            )
        return (value[0], value[1], value[2])
    text = value.strip() if isinstance(value, str) else ""
    if m := _CRM_TYPE.match(text):
        dynamic, prefix, deal = m.groups()
        cls = DYNAMIC_CLASS if dynamic is not None else CRM_CLASSES[(prefix or deal).upper()]
        return ("crm", cls, text.upper())
    if _TASK_TYPE.match(text):
        return ("tasks", TASK_CLASS, text.upper())
    if _LIST_TYPE.match(text):
        return ("lists", LISTS_CLASS, text.lower())
    raise DeclarationError(
        f"document_type {value!r} is not a known type; use e.g. 'DEAL', 'DEAL_C3', 'DYNAMIC_147', 'SMART_INVOICE',"
        " 'TASK_PROJECT_5', 'iblock_12', or the full triple [module, entity, type]"
    )
