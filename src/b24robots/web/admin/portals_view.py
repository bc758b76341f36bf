"""The admin UI's portals: each installation with how many robots it has registered, the recent syncs,
and the per-portal request limits and date culture (written to the audit log). A portal's re-sync is in
`removal.py`."""

from __future__ import annotations

import time
from typing import Any

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from b24robots.errors import B24RobotsError, NotFound
from b24robots.robots.dates import LANGUAGE_FORMATS
from b24robots.web.admin.base import Admin, Ctx


def add_portal_pages(admin: Admin) -> None:
    """Add /admin/portals and its limits and culture forms to the admin router."""
    page = admin.page
    page("/admin/portals")(portals)
    page("/admin/portals/{member_id}/limits", ("POST",))(portal_limits)
    page("/admin/portals/{member_id}/culture", ("POST",))(portal_culture)


def _rows(admin: Admin) -> list[dict[str, Any]]:
    svc = admin.svc
    out = []
    wanted = {r.spec.code for r in svc.registry.all()}
    for inst in admin.portals():
        regs = svc.registrations.of(inst.member_id) if inst.active else {}
        out.append({"inst": inst, "registered": len(set(regs) & wanted), "wanted": len(wanted)})
    return out


def _recent_syncs(admin: Admin) -> list[Any]:
    log = admin.svc.syncer.sync_log
    return log.recent(limit=20) if log else []


async def portals(ctx: Ctx) -> Response:
    return ctx.render(
        "portals.html",
        rows=await run_in_threadpool(_rows, ctx.admin),
        syncs=await run_in_threadpool(_recent_syncs, ctx.admin),
        now=time.time(),
        cultures=sorted(LANGUAGE_FORMATS),
    )


async def portal_limits(ctx: Ctx) -> Response:
    svc = ctx.admin.svc
    member_id = ctx.param("member_id")
    try:
        rate, burst = float(ctx.field("rate")), int(ctx.field("burst"))
        inst = await run_in_threadpool(svc.installations.set_limits, member_id, rate, burst)
        await ctx.audit_soon("portal.limits", inst.domain, rate=inst.rate, burst=inst.burst)
        svc.rest.set_rate(inst.member_id, inst.rate, inst.burst)
        ctx.flash(
            "success",
            ctx._(
                "%(portal)s: %(rate)s requests/s, burst %(burst)d.",
                portal=inst.domain,
                rate=f"{inst.rate:g}",
                burst=inst.burst,
            ),
        )
    except ValueError:
        ctx.flash("error", ctx._("Give the rate as a number (e.g. 2) and the burst as a whole number (e.g. 50)."))
    except NotFound:
        raise
    except B24RobotsError as exc:
        ctx.flash("error", str(exc))
    return ctx.redirect("/admin/portals")


async def portal_culture(ctx: Ctx) -> Response:
    svc = ctx.admin.svc
    member_id = ctx.param("member_id")
    try:
        inst = await run_in_threadpool(svc.installations.set_culture, member_id, ctx.field("culture"))
        await ctx.audit_soon("portal.culture", inst.domain, culture=inst.culture or "auto")
        ctx.flash(
            "success",
            ctx._(
                "%(portal)s: dates are read as %(culture)s.",
                portal=inst.domain,
                culture=inst.date_culture.describe(),
            ),
        )
    except NotFound:
        raise
    except B24RobotsError as exc:
        ctx.flash("error", str(exc))
    return ctx.redirect("/admin/portals")
