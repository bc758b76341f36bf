"""The admin UI's robot pages: the list (with the portals' sync state), the sync button, the editor of a
stored robot (new, edit, check, test run), a module robot's read-only page and adopting a module robot
into the register. Versions, diffs and activation are in `versions_view.py`, disable and delete in
`removal.py`. Saves and adoptions are written to the audit log.
"""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import quote

from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from b24robots import authoring
from b24robots.errors import NotFound
from b24robots.robots.params import localize
from b24robots.robots.registry import Resolved
from b24robots.robots.spec import RobotSpec
from b24robots.sandbox import check_source
from b24robots.store.db import read_off_loop
from b24robots.web.admin.base import Admin, Ctx, safe_next


def add_robot_pages(admin: Admin) -> None:
    """Add /admin/robots, /admin/new-robot, /admin/robots/{code} with its adopt and test-run, and the sync
    and check actions to the admin router."""
    page = admin.page
    page("/admin/robots")(robots)
    page("/admin/actions/sync", ("POST",))(sync)
    page("/admin/new-robot")(new_robot)
    page("/admin/new-robot", ("POST",))(create_robot)
    page("/admin/actions/check", ("POST",))(check)
    page("/admin/robots/{code}")(robot)
    page("/admin/robots/{code}", ("POST",))(update_robot)
    page("/admin/robots/{code}/adopt", ("POST",))(adopt)
    page("/admin/robots/{code}/test-run", ("POST",))(test_run)


def _rows(admin: Admin, lang: str) -> dict[str, Any]:
    """The list's rows (module and stored robots, disabled ones last in their code order) and the active
    portals."""
    svc = admin.svc
    portals = admin.portals()
    regs = {i.member_id: svc.registrations.of(i.member_id) for i in portals if i.active}
    stored = {r.code: r for r in svc.register.robots()}
    rows = []
    for resolved in svc.registry.all():
        info = stored.get(resolved.spec.code)
        rows.append(
            {
                "code": resolved.spec.code,
                "name": localize(resolved.spec.name, lang),
                "kind": resolved.spec.kind,
                "origin": info.origin if info else "module",
                "version": info.active_version if info else None,
                "versions": info.versions if info else 0,
                "sync": admin.sync_state(resolved, portals, regs),
            }
        )
    for info in stored.values():
        if info.state == "disabled":
            doc = svc.register.version(info.code).document
            rows.append(
                {
                    "code": info.code,
                    "name": localize(RobotSpec.from_document(doc).name, lang),
                    "kind": info.kind,
                    "origin": info.origin,
                    "version": info.active_version,
                    "versions": info.versions,
                    "sync": [],
                    "disabled": True,
                }
            )
    rows.sort(key=lambda row: str(row["code"]))
    return {"rows": rows, "portals": [p for p in portals if p.active]}


async def robots(ctx: Ctx) -> Response:
    return ctx.render("robots.html", **await run_in_threadpool(_rows, ctx.admin, ctx.t.lang))


async def sync(ctx: Ctx) -> Response:
    await ctx.admin.sync_all(ctx)
    return ctx.redirect(safe_next(ctx.field("next")))


async def new_robot(ctx: Ctx) -> Response:
    return ctx.render(
        "robot_edit.html",
        connection_names=await run_in_threadpool(ctx.admin.connection_names),
        form=authoring.empty_form(),
        errors=authoring.FormErrors(),
        new=True,
        types=authoring.PARAM_TYPES,
        info=None,
        module_twin=False,
    )


async def create_robot(ctx: Ctx) -> Response:
    return await _save(ctx, None)


async def update_robot(ctx: Ctx) -> Response:
    code = ctx.param("code")
    if not await run_in_threadpool(ctx.admin.svc.register.exists, code):
        raise NotFound(ctx._("There is no stored robot with the code %(code)s.", code=code))
    return await _save(ctx, code)


async def _save(ctx: Ctx, code: str | None) -> Response:
    """Save the editor's form as a new robot (`code` None) or as the next version of `code`: the form
    again with its errors (422), or a redirect to the robot's page with what the save means."""
    admin, svc = ctx.admin, ctx.admin.svc
    form = authoring.form_from_fields(ctx.form)
    base = None
    if code is not None:
        base = (await run_in_threadpool(svc.register.version, code)).document
        form["code"] = code  # the code of an existing robot does not change
    spec, errors = authoring.spec_from_form(form, base)
    if code is None and not errors.fields.get("code"):
        if await run_in_threadpool(svc.register.exists, form["code"]):
            errors.fields["code"] = ctx._("A stored robot with this code exists already; open it to edit it.")
        elif svc.registry.router.get(form["code"]) is not None:
            errors.fields["code"] = ctx._("A module robot has this code; open it and use Adopt to edit it here.")
    if errors or spec is None:
        # an existing robot keeps everything its page shows beside the form (the test-run panel runs
        # the active version, which the failed save left as it was)
        shown = await _stored_robot_page(admin, code) if code else {"info": None, "module_twin": False}
        return ctx.render(
            "robot_edit.html",
            422,
            connection_names=await run_in_threadpool(admin.connection_names),
            form=form,
            errors=errors,
            new=code is None,
            types=authoring.PARAM_TYPES,
            **shown,
        )
    author = ctx.user.username if ctx.user else "admin"
    before = (await run_in_threadpool(svc.register.version, code)).number if code else 0
    info = await run_in_threadpool(
        lambda: svc.register.save(spec, form["source"], author=author, comment=form["comment"])
    )
    if info.number != before:
        await ctx.audit_soon("robot.save", spec.code, version=info.number, comment=form["comment"][:200])
    if info.number == before:
        ctx.flash("info", ctx._("Nothing changed: version %(n)d stays active.", n=info.number))
    elif base is None:
        ctx.flash(
            "success",
            ctx._("Saved version %(n)d; it is active now. Register it in Bitrix24 to put it on the portals.", n=1),
        )
    else:
        saved = ctx._("Saved version %(n)d; it is active now.", n=info.number)
        ctx.flash("success", f"{saved} {await admin.registration_note(ctx, spec.code, base)}")
    return ctx.redirect(f"/admin/robots/{quote(spec.code)}")


async def check(ctx: Ctx) -> Response:
    problems = check_source(ctx.field("source"))
    return JSONResponse({"problems": [{"line": p.line, "col": p.col, "message": p.message} for p in problems]})


def _module_source(resolved: Resolved) -> str:
    try:
        return inspect.getsource(resolved.module.handler) if resolved.module else ""
    except (OSError, TypeError):
        return ""


def _robot_sync_state(admin: Admin, resolved: Resolved | None) -> list[dict[str, str]]:
    portals = [i for i in admin.portals() if i.active]
    regs = {i.member_id: admin.svc.registrations.of(i.member_id) for i in portals}
    return admin.sync_state(resolved, portals, regs) if resolved else []


async def _stored_robot_page(admin: Admin, code: str) -> dict[str, Any]:
    """What a stored robot's page shows besides its form: the active version, the test-run inputs,
    its state and whether the portals are in step."""
    svc = admin.svc
    info = await run_in_threadpool(svc.register.version, code)
    resolved = await read_off_loop(svc.registry.resolve, code)
    return {
        "info": info,
        "module_twin": code in svc.registry.router,
        "inputs": resolved.spec.inputs if resolved else (),
        "state": await run_in_threadpool(svc.register.state, code),
        "sync": await run_in_threadpool(_robot_sync_state, admin, resolved),
    }


async def robot(ctx: Ctx) -> Response:
    """A stored robot's editor, or a module robot's read-only page."""
    admin, svc = ctx.admin, ctx.admin.svc
    code = ctx.param("code")
    if await run_in_threadpool(svc.register.exists, code):
        shown = await _stored_robot_page(admin, code)
        form = authoring.form_from_document(shown["info"].document, shown["info"].source)
        return ctx.render(
            "robot_edit.html",
            connection_names=await run_in_threadpool(admin.connection_names),
            form=form,
            errors=authoring.FormErrors(),
            new=False,
            types=authoring.PARAM_TYPES,
            **shown,
        )
    resolved = await read_off_loop(svc.registry.resolve, code)
    if resolved is None or resolved.module is None:
        raise NotFound(ctx._("There is no robot with the code %(code)s.", code=code))
    doc = resolved.spec.to_document()
    return ctx.render(
        "robot_module.html",
        spec=resolved.spec,
        doc=doc,
        source=_module_source(resolved),
        handler=f"{resolved.module.handler.__module__}.{resolved.module.handler.__qualname__}",
    )


async def adopt(ctx: Ctx) -> Response:
    """Store a module robot's code as version 1 of a stored robot; what cannot be converted goes back to
    the editor for the admin to finish."""
    admin, svc = ctx.admin, ctx.admin.svc
    code = ctx.param("code")
    module = svc.registry.router.get(code)
    if module is None:
        raise NotFound(ctx._("There is no module robot with the code %(code)s.", code=code))
    if await run_in_threadpool(svc.register.exists, code):
        return ctx.redirect(f"/admin/robots/{quote(code)}")
    adoption = authoring.adopt_source(module)
    if not adoption.converted:
        form = authoring.form_from_document(module.spec.to_document(), adoption.source)
        form["comment"] = "adopted from the module robot"
        errors = authoring.FormErrors(
            fields={"source": ctx._("Converted only in part (%(why)s): finish the code, then save.", why=adoption.note)}
        )
        return ctx.render(
            "robot_edit.html",
            connection_names=await run_in_threadpool(admin.connection_names),
            form=form,
            errors=errors,
            new=True,
            adopting=True,
            types=authoring.PARAM_TYPES,
            info=None,
            module_twin=True,
        )
    author = ctx.user.username if ctx.user else "admin"
    info = await run_in_threadpool(
        lambda: svc.register.save(
            module.spec, adoption.source, author=author, comment="adopted from the module robot", origin="adopted"
        )
    )
    await ctx.audit_soon("robot.adopt", code, version=info.number)
    ctx.flash(
        "success",
        ctx._(
            "Adopted: stored version %(n)d now runs instead of the module code. Check it with a test run.",
            n=info.number,
        ),
    )
    return ctx.redirect(f"/admin/robots/{quote(code)}")


async def test_run(ctx: Ctx) -> Response:
    svc = ctx.admin.svc
    code = ctx.param("code")
    resolved = await read_off_loop(svc.registry.resolve, code)
    if resolved is None:
        raise NotFound(ctx._("There is no robot with the code %(code)s.", code=code))
    given = {k.removeprefix("input."): v for k, v in ctx.form if k.startswith("input.")}
    result = await authoring.test_run(
        resolved, given, svc.sandbox, document_id=ctx.field("document_id") or "DEAL_1", connections=svc.hub
    )
    return ctx.render("_test_result.html", result=result)
