"""The admin UI's journal: the live list with its filters (and the rows htmx polls for), the dead
letters, one entry's detail, and retry and replay (written to the audit log)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from b24robots.errors import B24RobotsError, NotFound
from b24robots.store.journal import DEAD, STATES
from b24robots.web.admin.base import Admin, Ctx, parse_id

SINCE = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}  # the list's time filter, in seconds
PAGE_SIZE = 100
FILTERS = ("robot", "portal", "status", "since")


def add_journal_pages(admin: Admin) -> None:
    """Add /admin/journal, /admin/journal/dead, /admin/journal/rows and /admin/journal/{id} with its retry
    and replay to the admin router (the fixed paths before the entry's)."""
    page = admin.page
    page("/admin/journal")(journal)
    page("/admin/journal/dead")(dead_letters)
    page("/admin/journal/rows")(journal_rows)
    page("/admin/journal/{inv_id}")(journal_detail)
    page("/admin/journal/{inv_id}/{action}", ("POST",))(journal_action)


def _query(ctx: Ctx, state: str | None) -> dict[str, Any]:
    """One page of entries (newest first, older than `?before=`) under the query's filters; `state`
    fixes the status filter (the dead letters)."""
    admin, svc = ctx.admin, ctx.admin.svc
    portals = {i.id: i for i in admin.portals()}
    portal = ctx.query("portal")
    installation_id = next((i.id for i in portals.values() if i.member_id == portal), None)
    since = SINCE.get(ctx.query("since"))
    status = state or (ctx.query("status") if ctx.query("status") in STATES else None)
    before = ctx.query("before")
    rows = svc.journal.recent(
        state=status,
        robot=ctx.query("robot") or None,
        installation_id=installation_id,
        since=time.time() - since if since else None,
        limit=PAGE_SIZE,
        before_id=parse_id(before),
    )
    return {
        "rows": rows,
        "portals": portals,
        "states": STATES,
        "robots": [r.spec.code for r in svc.registry.all()],
        "filters": {k: ctx.query(k) for k in FILTERS},
        "fixed_state": state,
        "live": not before,
        "older": rows[-1].id if len(rows) == PAGE_SIZE else None,
        "query": urlencode({k: ctx.query(k) for k in FILTERS if ctx.query(k)}),
    }


async def journal(ctx: Ctx) -> Response:
    return ctx.render("journal.html", **await run_in_threadpool(_query, ctx, None))


async def dead_letters(ctx: Ctx) -> Response:
    return ctx.render("journal.html", **await run_in_threadpool(_query, ctx, DEAD))


async def journal_rows(ctx: Ctx) -> Response:
    state = DEAD if ctx.query("dead") == "1" else None
    return ctx.render("_journal_rows.html", **await run_in_threadpool(_query, ctx, state))


async def journal_detail(ctx: Ctx) -> Response:
    svc = ctx.admin.svc
    inv_id = ctx.param("inv_id")
    wanted = parse_id(inv_id)
    if wanted is None:
        raise NotFound(ctx._("There is no journal entry %(id)s.", id=inv_id[:20]))
    inv = await run_in_threadpool(svc.journal.get, wanted)
    try:
        portal = (await run_in_threadpool(svc.installations.by_id, inv.installation_id)).domain
    except NotFound:
        portal = "?"
    calls = await run_in_threadpool(svc.connections.calls_for, inv.id)
    return ctx.render("journal_detail.html", inv=inv, portal=portal, calls=calls)


async def journal_action(ctx: Ctx) -> Response:
    """Retry an entry in place or replay it as a new entry, then wake the workers."""
    svc = ctx.admin.svc
    inv_id, action = ctx.param("inv_id"), ctx.param("action")
    wanted = parse_id(inv_id)
    if wanted is None or action not in ("retry", "replay"):
        raise NotFound(ctx._("There is no journal entry %(id)s.", id=inv_id[:20]))
    try:
        if action == "retry":
            inv = await run_in_threadpool(svc.journal.retry, wanted)
            ctx.flash("success", ctx._("Entry %(id)d is queued to run again.", id=inv.id))
            await ctx.audit_soon("journal.retry", str(inv.id), robot=inv.robot_code)
        else:
            inv = await run_in_threadpool(svc.journal.replay, wanted)
            ctx.flash("success", ctx._("Replayed as entry %(id)d.", id=inv.id))
            await ctx.audit_soon("journal.replay", str(wanted), robot=inv.robot_code, new_entry=inv.id)
        svc.work_wakeup.notify()
    except NotFound:
        raise
    except B24RobotsError as exc:
        ctx.flash("error", str(exc))
        return ctx.redirect(f"/admin/journal/{inv_id}")
    return ctx.redirect(f"/admin/journal/{inv.id}")
