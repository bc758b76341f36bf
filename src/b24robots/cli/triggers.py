"""`b24robots triggers ...`: declare triggers in the register, list them, fire one, start a business
process, see a fire's status.

`add`, `set` and `remove` change the register's triggers (audited, versioned); the next sync
(`b24robots sync`) registers, renames or deletes them on the portals. A fire is journaled here and
delivered by the server's sender (`b24robots serve` / `worker`); with `--wait` the command waits until
it was delivered or failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from b24robots.cli.common import cli_actor, console, default_author, fail, friendly, when
from b24robots.config import load_settings
from b24robots.errors import DeclarationError, InputError
from b24robots.fields import as_int
from b24robots.jobs.outbound import Fired, OutboundError
from b24robots.jobs.trigger_sync import portal_state
from b24robots.loader import load_router
from b24robots.robots.params import LocalizedText
from b24robots.robots.triggers import Entity, TriggerSpec, check_trigger_code
from b24robots.store.journal import Invocation, call_status

app = typer.Typer(help="CRM automation triggers and business-process starts.", no_args_is_help=True)

AppOpt = Annotated[str | None, typer.Option("--app", help="robots' Router, module:attribute")]
PortalOpt = Annotated[str, typer.Option("--portal", help="domain or member_id of the installation")]


def _services(app_path: str | None) -> Any:
    from b24robots.web.services import build_services

    settings = load_settings()
    return build_services(settings, load_router(app_path if app_path is not None else settings.app))


def entity_from_options(
    *,
    deal: int | None = None,
    lead: int | None = None,
    contact: int | None = None,
    company: int | None = None,
    quote: int | None = None,
    smart_invoice: int | None = None,
    item: str | None = None,
    document: str | None = None,
) -> Entity:
    """Exactly one of the entity options, as an Entity."""
    given: list[Entity] = []
    for kind, value in (
        ("deal", deal),
        ("lead", lead),
        ("contact", contact),
        ("company", company),
        ("quote", quote),
        ("smart_invoice", smart_invoice),
    ):
        if value is not None:
            given.append(Entity.of(kind, value))
    if item is not None:
        type_id, sep, ident = item.partition(":")
        type_number, ident_number = as_int(type_id), as_int(ident)
        if not sep or type_number is None or ident_number is None:
            raise InputError("--item", f"{item!r}: give the smart process type id and the item id, like 147:5")
        given.append(Entity(type_number, ident_number))
    if document is not None:
        given.append(Entity.parse(document))
    if len(given) != 1:
        raise InputError(
            "entity",
            "name exactly one entity: --deal N, --lead N, --contact N, --company N, --quote N, --smart-invoice N, "
            "--item TYPE:ID or --document DEAL_42",
        )
    return given[0]


def _show(fired: Fired) -> None:
    e = fired.entry
    what = "stored" if fired.created else "already stored under this key"
    console.print(f"journal entry {e.id}: {e.robot_code} on {e.document_id[2]} {what}; status {call_status(e)}")


async def _wait(svc: Any, entry: Invocation, seconds: float) -> Invocation:
    deadline = time.monotonic() + seconds
    current = entry
    while time.monotonic() < deadline:
        current = svc.journal.get(entry.id)
        if call_status(current) != "pending":
            break
        await asyncio.sleep(0.2)
    return current


def _run(svc: Any, start: Callable[[], Awaitable[Fired]], wait: float) -> None:
    """Journal the fire, print it, wait for its delivery if asked; exit 1 when it failed."""

    async def go() -> Invocation | None:
        try:
            fired = await start()
            _show(fired)
            return await _wait(svc, fired.entry, wait) if wait > 0 else None
        finally:
            await svc.rest.aclose()
            await svc.http.aclose()

    try:
        final = asyncio.run(go())
    except OutboundError as exc:
        fail(str(exc))
        return
    if final is not None:
        state = call_status(final)
        console.print(f"status {state}" + (f": {escape(final.error)}" if final.error else ""), highlight=False)
        if state == "failed":
            raise typer.Exit(1)


STATE_TEXT = {
    "registered": "registered",
    "changed": "changed (next sync renames it)",
    "missing": "not yet",
    "unavailable": "no CRM automation",
}


@app.command("list")
@friendly
def list_triggers(
    app_path: AppOpt = None,
    portal: Annotated[str | None, typer.Option("--portal", help="show registration on this portal only")] = None,
) -> None:
    """List declared triggers (module and register) and whether each portal has them registered."""
    svc = _services(app_path)
    portals = [svc.installations.get(portal)] if portal else [i for i in svc.installations.all() if i.active]
    table = Table(title="Triggers")
    for col in ("code", "name", "source"):
        table.add_column(col)
    for inst in portals:
        table.add_column(inst.domain)
    declared = svc.registry.triggers()
    for spec in declared:
        source = svc.registry.trigger_source(spec.code) or "-"
        cells = [
            escape(spec.code),
            escape(spec.name_for()),
            "module + register (clash)" if source == "both" else source,
        ]
        for inst in portals:
            cells.append(STATE_TEXT[portal_state(svc.registrations, inst.member_id, spec, inst.language or "en")])
        table.add_row(*cells)
    if not declared:
        table.add_row(
            "-", "no triggers declared (router.trigger(...) or b24robots triggers add)", "", *["" for _ in portals]
        )
    console.print(table)


def _name(name: str | None, name_ru: str | None, current: LocalizedText | None = None) -> LocalizedText:
    """The NAME from --name/--name-ru, over the current one: plain when only one text is given."""
    texts: dict[str, str] = {}
    if isinstance(current, str):
        texts["en"] = current
    elif current:
        texts.update(current)
    for lang, given in (("en", name), ("ru", name_ru)):
        if given is not None:
            if not given.strip():
                option = "--name" if lang == "en" else "--name-ru"
                raise DeclarationError(f'{option} is empty; give the trigger a name, e.g. {option} "Payment received"')
            texts[lang] = given.strip()
    if not texts:
        raise DeclarationError('the trigger needs a name; pass --name "Payment received" (and --name-ru for Russian)')
    return texts["en"] if set(texts) == {"en"} else texts


NameOpt = Annotated[str | None, typer.Option("--name", help="the NAME (English, or the only one)")]
NameRuOpt = Annotated[str | None, typer.Option("--name-ru", help="the NAME in Russian")]
CommentOpt = Annotated[str, typer.Option(help="version comment")]


def _synced_hint(svc: Any) -> str:
    portals = [i for i in svc.installations.all() if i.active]
    return "; run `b24robots sync` to register it on the portals" if portals else ""


@app.command("add")
@friendly
def add(
    code: Annotated[str, typer.Argument(help="the trigger's CODE: latin letters, digits, '.', '-', '_'")],
    name: NameOpt = None,
    name_ru: NameRuOpt = None,
    comment: CommentOpt = "",
    app_path: AppOpt = None,
) -> None:
    """Add a trigger to the register (the next sync registers it on every portal)."""
    check_trigger_code(code)
    spec = TriggerSpec(code, _name(name, name_ru))
    svc = _services(app_path)
    svc.registry.check_register_trigger(code)
    saved = svc.trigger_register.save(
        spec, author=default_author(), actor=cli_actor(), comment=comment, must_exist=False
    )
    console.print(f"added trigger {escape(code)}: version {saved.version.number}{_synced_hint(svc)}", highlight=False)


@app.command("set")
@friendly
def set_(
    code: Annotated[str, typer.Argument(help="the register trigger's CODE")],
    name: NameOpt = None,
    name_ru: NameRuOpt = None,
    comment: CommentOpt = "",
    app_path: AppOpt = None,
) -> None:
    """Change a register trigger's name (a new version; the next sync renames it on the portals)."""
    check_trigger_code(code)
    if name is None and name_ru is None:
        raise DeclarationError(f'nothing to change; pass --name "..." and/or --name-ru "..." for {code}')
    svc = _services(app_path)
    current = svc.trigger_register.get(code)
    spec = TriggerSpec(current.code, _name(name, name_ru, current.spec.name))
    saved = svc.trigger_register.save(
        spec, author=default_author(), actor=cli_actor(), comment=comment, must_exist=True
    )
    if saved.action == "same":
        console.print(f"trigger {escape(current.code)} has this name already; nothing changed", highlight=False)
        return
    console.print(
        f"changed trigger {escape(current.code)}: version {saved.version.number}{_synced_hint(svc)}", highlight=False
    )


@app.command("remove")
@friendly
def remove(
    code: Annotated[str, typer.Argument(help="the register trigger's CODE")],
    yes: Annotated[bool, typer.Option("--yes", help="remove without asking (for scripts)")] = False,
    app_path: AppOpt = None,
) -> None:
    """Remove a trigger from the register; the next sync deletes it from the portals this server registered it on."""
    svc = _services(app_path)
    current = svc.trigger_register.get(code)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"{code} not removed: the input is not a terminal, so nobody can confirm; add --yes")
        question = (
            f"Remove trigger {current.code}? The next sync deletes it from every portal this server registered "
            "it on, and automation rules that wait for it stop firing. Its versions are kept as history."
        )
        if not typer.confirm(question, default=False):
            console.print("nothing changed", highlight=False)
            return
    svc.trigger_register.remove(code, actor=cli_actor())
    hint = "; run `b24robots sync` to delete it from the portals" if _synced_hint(svc) else ""
    console.print(f"removed trigger {escape(current.code)}{hint}", highlight=False)


@app.command("fire")
@friendly
def fire(
    code: Annotated[str, typer.Argument(help="the trigger's CODE")],
    portal: PortalOpt,
    deal: Annotated[int | None, typer.Option(help="deal id")] = None,
    lead: Annotated[int | None, typer.Option(help="lead id")] = None,
    contact: Annotated[int | None, typer.Option(help="contact id (fires for its linked deals)")] = None,
    company: Annotated[int | None, typer.Option(help="company id (fires for its linked deals)")] = None,
    quote: Annotated[int | None, typer.Option(help="quote id")] = None,
    smart_invoice: Annotated[int | None, typer.Option("--smart-invoice", help="smart invoice id")] = None,
    item: Annotated[str | None, typer.Option(help="smart-process item as TYPE_ID:ID, e.g. 147:5")] = None,
    document: Annotated[str | None, typer.Option(help="a document id such as DEAL_42 or DYNAMIC_147_5")] = None,
    key: Annotated[str | None, typer.Option(help="idempotency key: the same key fires once")] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for delivery (0: do not wait)")] = 0.0,
    app_path: AppOpt = None,
) -> None:
    """Fire a CRM automation trigger for one entity (journaled; the server delivers it)."""
    entity = entity_from_options(
        deal=deal,
        lead=lead,
        contact=contact,
        company=company,
        quote=quote,
        smart_invoice=smart_invoice,
        item=item,
        document=document,
    )
    svc = _services(app_path)
    _run(svc, lambda: svc.outbound.fire_trigger(portal, code, entity, origin="cli", key=key), wait)


@app.command("start-workflow")
@friendly
def start_workflow(
    template_id: Annotated[int, typer.Argument(help="the business-process template id (TEMPLATE_ID)")],
    portal: PortalOpt,
    deal: Annotated[int | None, typer.Option(help="deal id")] = None,
    lead: Annotated[int | None, typer.Option(help="lead id")] = None,
    contact: Annotated[int | None, typer.Option(help="contact id")] = None,
    company: Annotated[int | None, typer.Option(help="company id")] = None,
    quote: Annotated[int | None, typer.Option(help="quote id")] = None,
    smart_invoice: Annotated[int | None, typer.Option("--smart-invoice", help="smart invoice id")] = None,
    item: Annotated[str | None, typer.Option(help="smart-process item as TYPE_ID:ID, e.g. 147:5")] = None,
    document: Annotated[str | None, typer.Option(help="a document id such as DEAL_42 or DYNAMIC_147_5")] = None,
    param: Annotated[list[str] | None, typer.Option(help="template parameter NAME=VALUE (repeatable)")] = None,
    key: Annotated[str | None, typer.Option(help="idempotency key: the same key starts once")] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for delivery (0: do not wait)")] = 0.0,
    app_path: AppOpt = None,
) -> None:
    """Start a business process on one entity with bizproc.workflow.start (journaled)."""
    entity = entity_from_options(
        deal=deal,
        lead=lead,
        contact=contact,
        company=company,
        quote=quote,
        smart_invoice=smart_invoice,
        item=item,
        document=document,
    )
    parameters: dict[str, str] = {}
    for p in param or []:
        name, sep, value = p.partition("=")
        if not sep or not name:
            raise InputError("--param", f"{p!r}: write NAME=VALUE")
        parameters[name] = value
    svc = _services(app_path)
    _run(
        svc,
        lambda: svc.outbound.start_workflow(portal, template_id, entity, parameters, origin="cli", key=key),
        wait,
    )


@app.command("status")
@friendly
def status(
    entry_id: Annotated[int, typer.Argument(help="the journal entry id a fire printed")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show whether a fire or workflow start was delivered, is pending, or failed."""
    svc = _services(None)
    e = svc.journal.get(entry_id)
    if e.kind != "call":
        fail(f"journal entry {entry_id} is a robot call, not a fire; see `b24robots journal`")
    out = {
        "id": e.id,
        "what": e.robot_code,
        "document": e.document_id[2] if len(e.document_id) == 3 else "",
        "status": call_status(e),
        "error": e.error,
        "result": (e.outputs or {}).get("result"),
        "received": when(e.received_at),
        "delivered": when(e.delivered_at),
    }
    if as_json:
        console.print_json(json.dumps(out))
    else:
        for k, v in out.items():
            console.print(f"{k}: {v}", highlight=False)
