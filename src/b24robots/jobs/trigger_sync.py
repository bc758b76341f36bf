"""Sync of triggers: make the portal's `crm.automation.trigger.list` equal to the declared triggers.

A separate step of the sync, in the same plan and dry run as the robots. `trigger.add` on a known
CODE only renames it, so add and update are the same call (b24restdocs
`api-reference/crm/automation/triggers/crm-automation-trigger-add.md`); `delete` of an unknown CODE
answers `"Trigger not found"` with an empty error code (`...-delete.md`). A portal without CRM
automation has no `crm.automation.*` methods (ERROR_METHOD_NOT_FOUND, as for `bizproc.*` without the
feature, protocol §9.2): we remember that instead of failing the robots' sync.

NAME is one plain string (`crm-automation-trigger-add.md`: `NAME` is `string`, unlike
`bizproc.robot.add`, which takes a per-language array), so a trigger is registered with its name in
the portal's language (`Installation.language`, from the grant / app.info) through the same fallback
chain as robots' texts (`robots.params.localize`: the language, ru for ua, en, then any); an unknown
language gives the English name. A change of the portal's language renames the trigger at the next sync.

The declared triggers are the robots module's and the register's together (`Registry.triggers`); a
CODE declared in both is `hold`: not added, renamed or deleted, and the sync says why.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from b24robots.errors import MethodError, MethodNotFound
from b24robots.rest.client import RestClient
from b24robots.robots.triggers import TriggerSpec
from b24robots.store.registrations import Registrations

KIND = "trigger"
PREFIX = "trigger:"  # registrations of triggers are kept beside robots' under this prefix
UNAVAILABLE = "trigger:*"  # remembered when the portal has no CRM automation


@dataclass(frozen=True)
class TriggerChange:
    action: str  # add | update | delete
    code: str
    spec: TriggerSpec | None
    lang: str = "en"  # the portal's language the NAME is sent in


def remembered(ledger: Registrations, member_id: str) -> dict[str, str]:
    """trigger code -> fingerprint of what we registered (without the unavailable marker)."""
    regs = ledger.of(member_id)
    return {c[len(PREFIX) :]: fp for c, (kind, fp) in regs.items() if kind == KIND and c != UNAVAILABLE}


def unavailable(ledger: Registrations, member_id: str) -> bool:
    """The last sync found no CRM automation on the portal."""
    return UNAVAILABLE in ledger.of(member_id)


def portal_state(ledger: Registrations, member_id: str, spec: TriggerSpec, lang: str = "en") -> str:
    """A declared trigger on one portal: registered | changed (the next sync renames it) | missing |
    unavailable (the portal has no CRM automation), from the ledger of what we registered."""
    if unavailable(ledger, member_id):
        return "unavailable"
    known = {c.lower(): fp for c, fp in remembered(ledger, member_id).items()}
    fp = known.get(spec.code.lower())
    if fp is None:
        return "missing"
    return "registered" if fp == spec.fingerprint(lang) else "changed"


async def plan_triggers(
    rest: RestClient,
    ledger: Registrations,
    member_id: str,
    triggers: list[TriggerSpec],
    lang: str = "en",
    hold: set[str] | frozenset[str] = frozenset(),
) -> tuple[list[TriggerChange], str]:
    """The changes to make, and a warning when the portal cannot have triggers ("" otherwise).

    Names are compared, and will be sent, in `lang` (the portal's language). CODEs in `hold`
    (lowercased) are left as the portal has them.

    With no trigger declared and none remembered the portal is not asked at all.
    """
    known = await asyncio.to_thread(remembered, ledger, member_id)
    if not triggers and not known and not hold:
        return [], ""
    try:
        rows = await rest.call(member_id, "crm.automation.trigger.list")
    except MethodNotFound:
        await asyncio.to_thread(ledger.record, member_id, UNAVAILABLE, KIND, "no-crm-automation")
        return [], "the portal has no CRM automation (crm.automation.trigger.* are missing); triggers not registered"
    if await asyncio.to_thread(unavailable, ledger, member_id):
        await asyncio.to_thread(ledger.record, member_id, UNAVAILABLE, KIND, None)
    if isinstance(rows, dict):
        rows = list(rows.values())
    # codes compare case-insensitively on the portal (protocol §6)
    registered = {
        str(r.get("CODE", "")).lower(): (str(r.get("CODE", "")), str(r.get("NAME", "")))
        for r in rows or []
        if isinstance(r, dict)
    }
    wanted = {t.code.lower(): t for t in triggers if t.code.lower() not in hold}
    gone = set(registered) - set(wanted) - set(hold)
    plan = [TriggerChange("delete", registered[c][0], None, lang) for c in sorted(gone)]
    for code, spec in sorted(wanted.items()):
        if code not in registered:
            plan.append(TriggerChange("add", spec.code, spec, lang))
        elif known.get(spec.code) != spec.fingerprint(lang) or registered[code][1] != spec.name_for(lang):
            plan.append(TriggerChange("update", spec.code, spec, lang))
    return plan, ""


async def apply_trigger(rest: RestClient, ledger: Registrations, member_id: str, change: TriggerChange) -> None:
    if change.action == "delete":
        try:
            await rest.call(member_id, "crm.automation.trigger.delete", {"CODE": change.code})
        except MethodError as exc:
            if exc.description != "Trigger not found":
                raise
        await asyncio.to_thread(ledger.record, member_id, PREFIX + change.code, KIND, None)
        return
    assert change.spec is not None
    await rest.call(member_id, "crm.automation.trigger.add", change.spec.to_registration(change.lang))
    fingerprint = change.spec.fingerprint(change.lang)
    await asyncio.to_thread(ledger.record, member_id, PREFIX + change.code, KIND, fingerprint)
