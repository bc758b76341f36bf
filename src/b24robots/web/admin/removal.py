"""Admin pages that take robots off portals, each confirmed before anything is removed: a stored
robot's disable, enable and delete (robot page), and a portal's re-sync when it would delete robots.

A confirmation is a page of its own (no script needed) that posts the same form again with
`confirmed=1`. Disabling or deleting is written to the audit log with the state change and syncs the
robot on every active portal in the background, so it is unregistered right away.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from b24robots.errors import NotFound
from b24robots.jobs.sync import Change
from b24robots.store.register import ACTIVE, DELETED, DISABLED
from b24robots.web.admin.base import Admin, Ctx

STATES = {"disable": DISABLED, "enable": ACTIVE, "delete": DELETED}


def add_removal_pages(admin: Admin) -> None:
    """Add the robot state action and the portal re-sync to the admin router."""
    svc = admin.svc
    page = admin.page

    @page("/admin/robots/{code}/state", ("POST",))
    async def robot_state(ctx: Ctx) -> Response:
        code, action = ctx.param("code"), ctx.field("action")
        state = STATES.get(action)
        current = await run_in_threadpool(svc.register.state, code)
        if current is None or current == DELETED:
            raise NotFound(ctx._("There is no stored robot with the code %(code)s.", code=code))
        if state is None:
            raise NotFound(ctx._("Choose disable, enable or delete."))
        back = f"/admin/robots/{quote(code)}" if state != DELETED else "/admin/robots"
        if state != ACTIVE and ctx.field("confirmed") != "1":
            question = (
                ctx._(
                    "Disable %(code)s? It stays in the register and can be enabled again. It is unregistered "
                    "from every portal; calls that still arrive are answered with a log line saying it is "
                    "disabled.",
                    code=code,
                )
                if state == DISABLED
                else ctx._(
                    "Delete %(code)s? It is unregistered from every portal and leaves the list. Its versions "
                    "are kept as history, and the code can be used for a new robot.",
                    code=code,
                )
            )
            return ctx.render(
                "confirm.html",
                title=ctx._("Disable the robot") if state == DISABLED else ctx._("Delete the robot"),
                question=question,
                action=f"/admin/robots/{quote(code)}/state",
                fields={"action": action},
                yes=ctx._("Disable") if state == DISABLED else ctx._("Delete"),
                cancel=f"/admin/robots/{quote(code)}",
                items=[],
            )
        if current != state:
            await run_in_threadpool(lambda: svc.register.set_state(code, state, actor=ctx.actor, address=ctx.address))
            svc.sync_robot_soon(code)
        done = {
            DISABLED: ctx._("%(code)s is disabled; it is being unregistered from the portals.", code=code),
            ACTIVE: ctx._("%(code)s is enabled; it is being registered on the portals.", code=code),
            DELETED: ctx._("%(code)s is deleted; it is being unregistered from the portals.", code=code),
        }
        ctx.flash("success", done[state])
        return ctx.redirect(back)

    @page("/admin/portals/{member_id}/sync", ("POST",))
    async def portal_sync(ctx: Ctx) -> Response:
        inst = await run_in_threadpool(svc.installations.get, ctx.param("member_id"))
        if not inst.active:
            return ctx.redirect("/admin/portals")
        answer = ctx.field("confirmed")
        if answer not in ("1", "0"):
            planned = await svc.syncer.sync(inst.member_id, dry_run=True, record=False)
            deletes = [c for c in planned.changes if c.action == "delete"]
            if deletes and not planned.error:
                return ctx.render(
                    "confirm.html",
                    title=ctx._("Re-sync %(portal)s", portal=inst.domain),
                    question=ctx._(
                        "This sync would delete %(n)d registration(s) from %(portal)s. Workflows that use them "
                        "stop working there. Delete them?",
                        n=len(deletes),
                        portal=inst.domain,
                    ),
                    action=f"/admin/portals/{inst.member_id}/sync",
                    fields={},
                    keys=[_key(c) for c in deletes],
                    items=deletes,
                    yes=ctx._("Delete and sync"),
                    no=ctx._("Sync without deleting"),
                    cancel="/admin/portals",
                )
        allowed = {v for k, v in ctx.form if k == "delete"} if answer == "1" else set()
        await admin.sync_all(ctx, inst.member_id, confirm=lambda deletes: {_key(c) for c in deletes} <= allowed)
        return ctx.redirect("/admin/portals")


def _key(change: Change) -> str:
    return f"{change.kind}:{change.code}"
