"""The admin UI's version history of a stored robot: the list, the diff of two versions and activating
one (asked first; written to the audit log)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from b24robots import authoring
from b24robots.errors import NotFound
from b24robots.web.admin.base import Admin, Ctx, parse_id


def add_version_pages(admin: Admin) -> None:
    """Add /admin/robots/{code}/versions, /diff and /activate to the admin router."""
    page = admin.page
    page("/admin/robots/{code}/versions")(versions)
    page("/admin/robots/{code}/diff")(diff)
    page("/admin/robots/{code}/activate", ("POST",))(activate)


async def versions(ctx: Ctx) -> Response:
    code = ctx.param("code")
    history = await run_in_threadpool(ctx.admin.svc.register.versions, code)
    return ctx.render("versions.html", code=code, versions=list(reversed(history)))


async def diff(ctx: Ctx) -> Response:
    """Versions `?a=` and `?b=` side by side, section by section; 404 unless both exist."""
    code = ctx.param("code")
    history = {v.number: v for v in await run_in_threadpool(ctx.admin.svc.register.versions, code)}
    a, b = parse_id(ctx.query("a")) or 0, parse_id(ctx.query("b")) or 0
    if a not in history or b not in history:
        raise NotFound(ctx._("Choose two versions of %(code)s that exist.", code=code))
    sections = authoring.diff_sections(history[a], history[b])
    return ctx.render(
        "diff.html", code=code, a=history[a], b=history[b], sections=sections, numbers=sorted(history, reverse=True)
    )


async def activate(ctx: Ctx) -> Response:
    """Make another version the active one: a confirmation first, then the switch once `confirmed=1`."""
    admin, svc = ctx.admin, ctx.admin.svc
    code = ctx.param("code")
    number = ctx.field("number")
    wanted = parse_id(number)
    if wanted is None:
        raise NotFound(ctx._("Choose a version to activate."))
    current = await run_in_threadpool(svc.register.version, code)
    if ctx.field("confirmed") != "1" and current.number != wanted:
        await run_in_threadpool(svc.register.version, code, wanted)  # NotFound for a version it lacks
        return ctx.render(
            "confirm.html",
            title=ctx._("Activate version %(n)s", n=wanted),
            question=ctx._(
                "Make version %(n)d of %(code)s the one that runs, from the next call on? Version %(active)d, "
                "active now, stays in the history and can be activated again.",
                n=wanted,
                code=code,
                active=current.number,
            ),
            action=f"/admin/robots/{quote(code)}/activate",
            fields={"number": str(wanted)},
            yes=ctx._("Activate version %(n)s", n=wanted),
            cancel=f"/admin/robots/{quote(code)}/versions",
            items=[],
        )
    info = await run_in_threadpool(svc.register.activate, code, wanted)
    await ctx.audit_soon("robot.activate", code, version=info.number)
    active = ctx._("Version %(n)d of %(code)s is active now.", n=info.number, code=code)
    ctx.flash("success", f"{active} {await admin.registration_note(ctx, code, current.document)}")
    return ctx.redirect(f"/admin/robots/{quote(code)}/versions")
