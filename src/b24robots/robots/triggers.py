"""Triggers and workflow starts: the way from outside back into Bitrix24 automation.

A trigger is declared like a robot (a CODE and a NAME, plain or per language) and registered on
every portal with `crm.automation.trigger.add`. Firing it is one `crm.automation.trigger.execute`
call for a CRM entity; starting a business process is one `bizproc.workflow.start` call. Both are
built here as plain (method, params) pairs; the journal and the sender deliver them.

Wire facts (b24restdocs `api-reference/crm/automation/triggers/crm-automation-trigger-add.md`,
`...-execute.md`; protocol §6): CODE `^[a-z0-9.\\-_]+$` case-insensitive, NAME a plain string,
`execute {CODE, OWNER_TYPE_ID, OWNER_ID}` answers `true` even when no stage changed or the entity does
not exist. `bizproc.workflow.start {TEMPLATE_ID, DOCUMENT_ID, PARAMETERS}` answers the workflow id
(b24restdocs `api-reference/bizproc/bizproc-workflow-start.md`; yuliai/bitrix-modules
`bizproc/classes/general/restservice.php::startWorkflow`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from b24robots.errors import DeclarationError, InputError
from b24robots.robots.params import LocalizedText, check_text, localize

TRIGGER_CODE_RE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)
TRIGGER_CODE_MAX = 128

# Owner type ids (crm.enum.ownertype, b24restdocs `api-reference/crm/auxiliary/enum/crm-enum-owner-type.md`);
# smart processes have their own entity type id, 128 and above, plus 31 for smart invoices.
LEAD, DEAL, CONTACT, COMPANY, QUOTE, SMART_INVOICE = 1, 2, 3, 4, 7, 31
DYNAMIC_MIN = 128

# name -> (owner type id, document id prefix, document entity class) per b24restdocs
# `api-reference/bizproc/bizproc-workflow-start.md` (DOCUMENT_ID examples) and protocol §9.3.
_DOCUMENTS: dict[str, tuple[int, str, str]] = {
    "lead": (LEAD, "LEAD", "CCrmDocumentLead"),
    "deal": (DEAL, "DEAL", "CCrmDocumentDeal"),
    "contact": (CONTACT, "CONTACT", "CCrmDocumentContact"),
    "company": (COMPANY, "COMPANY", "CCrmDocumentCompany"),
    "quote": (QUOTE, "QUOTE", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Quote"),
    "smart_invoice": (SMART_INVOICE, "SMART_INVOICE", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice"),
}
_BY_TYPE = {t: (name, prefix, cls) for name, (t, prefix, cls) in _DOCUMENTS.items()}
_BY_PREFIX = {prefix: t for _name, (t, prefix, _cls) in _DOCUMENTS.items()}
DYNAMIC_CLASS = "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"
ENTITY_NAMES = (*_DOCUMENTS, "smart")
_DOC_RE = re.compile(r"^(?:DYNAMIC_(\d+)|([A-Z_]+?))_(\d+)$", re.ASCII)


def check_trigger_code(code: object) -> str:
    """Validate a trigger CODE and return it."""
    if not isinstance(code, str) or not code:
        raise DeclarationError("trigger code is empty; use latin letters, digits, '.', '-' and '_' (e.g. 'payment')")
    if len(code) > TRIGGER_CODE_MAX:
        raise DeclarationError(f"trigger code is {len(code)} characters; at most {TRIGGER_CODE_MAX} are allowed")
    if not TRIGGER_CODE_RE.match(code):
        raise DeclarationError(
            f"trigger code {code!r} is invalid; use latin letters, digits, '.', '-' and '_' (e.g. 'payment.received')"
        )
    return code


@dataclass(frozen=True)
class TriggerSpec:
    """A declared trigger: what `crm.automation.trigger.add` registers."""

    code: str
    name: LocalizedText

    def __post_init__(self) -> None:
        check_trigger_code(self.code)
        name = check_text(self.name, f"trigger {self.code!r} name", required=True)
        object.__setattr__(self, "name", name)

    def name_for(self, lang: str = "en") -> str:
        """The portal shows one plain NAME: pick it for the portal's language."""
        return localize(self.name, lang)

    def to_registration(self, lang: str = "en") -> dict[str, str]:
        return {"CODE": self.code, "NAME": self.name_for(lang)}

    def fingerprint(self, lang: str = "en") -> str:
        return hashlib.sha256(json.dumps(self.to_registration(lang), sort_keys=True).encode()).hexdigest()

    def to_document(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name if isinstance(self.name, str) else dict(self.name)}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> TriggerSpec:
        if not isinstance(doc, Mapping):
            raise DeclarationError("a trigger must be an object with 'code' and 'name'")
        return cls(code=doc.get("code"), name=doc.get("name"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Entity:
    """A CRM entity: an owner type id and an id; maps to and from document ids both ways."""

    owner_type_id: int
    owner_id: int

    def __post_init__(self) -> None:
        t, i = self.owner_type_id, self.owner_id
        if isinstance(t, bool) or not isinstance(t, int) or (t not in _BY_TYPE and t < DYNAMIC_MIN):
            known = ", ".join(f"{n} {v[0]}" for n, v in _DOCUMENTS.items())
            raise InputError("entity", f"owner type {t!r} is unknown; use {known} or a smart process type id (>= 128)")
        if isinstance(i, bool) or not isinstance(i, int) or i <= 0:
            raise InputError("entity", f"entity id {i!r} must be a whole number above zero")

    @classmethod
    def of(cls, kind: str, owner_id: int, smart_type_id: int | None = None) -> Entity:
        """`Entity.of("deal", 42)`, `Entity.of("smart", 5, 147)`."""
        key = kind.lower().replace("-", "_")
        if key in ("smart", "dynamic", "item"):
            if smart_type_id is None:
                raise InputError("entity", "a smart-process item needs its entity type id, e.g. 147:5")
            return cls(int(smart_type_id), int(owner_id))
        if key not in _DOCUMENTS:
            raise InputError("entity", f"entity kind {kind!r} is unknown; use one of {', '.join(ENTITY_NAMES)}")
        return cls(_DOCUMENTS[key][0], int(owner_id))

    @classmethod
    def parse(cls, text: str) -> Entity:
        """Parse `DEAL_42`, `SMART_INVOICE_3`, `DYNAMIC_147_5` (the third part of a document id)."""
        m = _DOC_RE.match(str(text).strip().upper())
        if m is None:
            raise InputError("entity", f"{text!r} is not a CRM document id like DEAL_42 or DYNAMIC_147_5")
        dynamic, prefix, ident = m.groups()
        if dynamic is not None:
            return cls(int(dynamic), int(ident))
        if prefix not in _BY_PREFIX:
            raise InputError("entity", f"{text!r}: {prefix} is not a CRM entity; use LEAD, DEAL, CONTACT, COMPANY, ...")
        return cls(_BY_PREFIX[prefix], int(ident))

    @classmethod
    def from_document_id(cls, document_id: Any) -> Entity:
        """From `['crm', 'CCrmDocumentDeal', 'DEAL_42']` (or just its last part)."""
        if isinstance(document_id, list | tuple):
            if len(document_id) != 3 or str(document_id[0]) != "crm":
                raise InputError("entity", f"{document_id!r} is not a CRM document id ['crm', <class>, 'DEAL_42']")
            return cls.parse(str(document_id[2]))
        return cls.parse(str(document_id))

    @property
    def kind(self) -> str:
        return _BY_TYPE[self.owner_type_id][0] if self.owner_type_id in _BY_TYPE else "smart"

    @property
    def document_key(self) -> str:
        if self.owner_type_id in _BY_TYPE:
            return f"{_BY_TYPE[self.owner_type_id][1]}_{self.owner_id}"
        return f"DYNAMIC_{self.owner_type_id}_{self.owner_id}"

    @property
    def document_id(self) -> list[str]:
        cls_name = _BY_TYPE[self.owner_type_id][2] if self.owner_type_id in _BY_TYPE else DYNAMIC_CLASS
        return ["crm", cls_name, self.document_key]

    def __str__(self) -> str:
        return self.document_key


def trigger_call(code: str, entity: Entity) -> tuple[str, dict[str, Any]]:
    """The REST call that fires trigger `code` for `entity`."""
    check_trigger_code(code)
    return "crm.automation.trigger.execute", {
        "CODE": code,
        "OWNER_TYPE_ID": entity.owner_type_id,
        "OWNER_ID": entity.owner_id,
    }


def workflow_start_call(
    template_id: int, entity: Entity, parameters: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The REST call that starts business-process template `template_id` on `entity`."""
    if isinstance(template_id, bool) or not isinstance(template_id, int) or template_id <= 0:
        raise InputError("template_id", f"{template_id!r} must be a business-process template id above zero")
    params: dict[str, Any] = {"TEMPLATE_ID": template_id, "DOCUMENT_ID": entity.document_id}
    if parameters:
        params["PARAMETERS"] = dict(parameters)
    return "bizproc.workflow.start", params
