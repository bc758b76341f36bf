"""`b24robots triggers ...`: list triggers, fire one, start a business process, see a fire's status.

A fire is journaled here and delivered by the server's sender (`b24robots serve` / `worker`); with
`--wait` the command waits until it was delivered or failed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from b24robots.cli.common import console, fail, friendly, when
from b24robots.config import load_settings
from b24robots.errors import InputError
from b24robots.fields import as_int
from b24robots.jobs.outbound import Fired, OutboundError
from b24robots.jobs.trigger_sync import remembered, unavailable
from b24robots.loader import load_router
from b24robots.robots.triggers import Entity
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


@app.command("list")
@friendly
def list_triggers(
    app_path: AppOpt = None,
    portal: Annotated[str | None, typer.Option("--portal", help="show registration on this portal only")] = None,
) -> None:
    """List declared triggers and whether each portal has them registered."""
    svc = _services(app_path)
    portals = [svc.installations.get(portal)] if portal else [i for i in svc.installations.list() if i.active]
    table = Table(title="Triggers")
    table.add_column("code")
    table.add_column("name")
    for inst in portals:
        table.add_column(inst.domain)
    for spec in svc.registry.triggers():
        cells = [spec.code, spec.name_for()]
        for inst in portals:
            if unavailable(svc.installations, inst.member_id):
                cells.append("no CRM automation")
            else:
                cells.append("registered" if spec.code in remembered(svc.installations, inst.member_id) else "not yet")
        table.add_row(*cells)
    if not svc.registry.triggers():
        table.add_row("-", "no triggers declared (router.trigger(...))", *["" for _ in portals])
    console.print(table)


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
