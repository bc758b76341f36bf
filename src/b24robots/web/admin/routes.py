"""The admin UI's pages: sign-in, robots (list, editor, versions, diff, test run, adopt, sync),
the journal (live list, detail, retry, replay, dead letters) and portals.

Every page needs a signed-in admin; every POST needs the session's CSRF token. Endpoints take the
raw request (path values, query and form are read here); the wrapper that signs in, picks the
language, bounds the body and checks CSRF is `Admin.page` in `base.py`. Sign-in pages and the audit
log are in `signin.py`. Changes made here are written to the audit log.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from b24robots import authoring
from b24robots.errors import B24RobotsError, NotFound
from b24robots.robots.dates import LANGUAGE_FORMATS
from b24robots.robots.params import localize
from b24robots.robots.registry import Resolved
from b24robots.robots.spec import RobotSpec
from b24robots.sandbox import check_source
from b24robots.store.db import read_off_loop
from b24robots.store.journal import DEAD, STATES
from b24robots.web.admin import connections_view
from b24robots.web.admin.base import Admin, Ctx, parse_id, safe_next
from b24robots.web.admin.dashboard import add_dashboard_pages
from b24robots.web.admin.removal import add_removal_pages
from b24robots.web.admin.signin import add_signin_pages
from b24robots.web.admin.triggers import add_trigger_pages
from b24robots.web.services import Services

log = logging.getLogger("b24robots.admin")

SINCE = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
PAGE_SIZE = 100


def build_router(services: Services) -> APIRouter:
    """The admin UI's routes, all under /admin."""
    return build_admin(services).router


def build_admin(services: Services) -> Admin:
    """The admin UI with its pages registered on `.router`."""
    admin = Admin(services)
    svc = services
    page = admin.page

    add_signin_pages(admin)
    add_dashboard_pages(admin)
    add_trigger_pages(admin)
    add_removal_pages(admin)

    # --- robots ------------------------------------------------------------------------------
    @page("/admin/robots")
    async def robots(ctx: Ctx) -> Response:
        def load() -> dict[str, Any]:
            portals = admin.portals()
            regs = {i.member_id: svc.registrations.of(i.member_id) for i in portals if i.active}
            stored = {r.code: r for r in svc.register.robots()}
            rows = []
            for resolved in svc.registry.all():
                info = stored.get(resolved.spec.code)
                rows.append(
                    {
                        "code": resolved.spec.code,
                        "name": localize(resolved.spec.name, ctx.t.lang),
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
                            "name": localize(RobotSpec.from_document(doc).name, ctx.t.lang),
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

        return ctx.render("robots.html", **await run_in_threadpool(load))

    @page("/admin/actions/sync", ("POST",))
    async def sync(ctx: Ctx) -> Response:
        await admin.sync_all(ctx)
        return ctx.redirect(safe_next(ctx.field("next")))

    @page("/admin/new-robot")
    async def new_robot(ctx: Ctx) -> Response:
        return ctx.render(
            "robot_edit.html",
            connection_names=await run_in_threadpool(admin.connection_names),
            form=authoring.empty_form(),
            errors=authoring.FormErrors(),
            new=True,
            types=authoring.PARAM_TYPES,
            info=None,
            module_twin=False,
        )

    async def save(ctx: Ctx, code: str | None) -> Response:
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
            shown = await stored_robot_page(code) if code else {"info": None, "module_twin": False}
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

    @page("/admin/new-robot", ("POST",))
    async def create_robot(ctx: Ctx) -> Response:
        return await save(ctx, None)

    @page("/admin/actions/check", ("POST",))
    async def check(ctx: Ctx) -> Response:
        problems = check_source(ctx.field("source"))
        return JSONResponse({"problems": [{"line": p.line, "col": p.col, "message": p.message} for p in problems]})

    def module_source(resolved: Resolved) -> str:
        try:
            return inspect.getsource(resolved.module.handler) if resolved.module else ""
        except (OSError, TypeError):
            return ""

    def robot_sync_state(resolved: Resolved | None) -> list[dict[str, str]]:
        portals = [i for i in admin.portals() if i.active]
        regs = {i.member_id: svc.registrations.of(i.member_id) for i in portals}
        return admin.sync_state(resolved, portals, regs) if resolved else []

    async def stored_robot_page(code: str) -> dict[str, Any]:
        """What a stored robot's page shows besides its form: the active version, the test-run inputs,
        its state and whether the portals are in step."""
        info = await run_in_threadpool(svc.register.version, code)
        resolved = await read_off_loop(svc.registry.resolve, code)
        return {
            "info": info,
            "module_twin": code in svc.registry.router,
            "inputs": resolved.spec.inputs if resolved else (),
            "state": await run_in_threadpool(svc.register.state, code),
            "sync": await run_in_threadpool(robot_sync_state, resolved),
        }

    @page("/admin/robots/{code}")
    async def robot(ctx: Ctx) -> Response:
        code = ctx.param("code")
        if await run_in_threadpool(svc.register.exists, code):
            shown = await stored_robot_page(code)
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
            source=module_source(resolved),
            handler=f"{resolved.module.handler.__module__}.{resolved.module.handler.__qualname__}",
        )

    @page("/admin/robots/{code}", ("POST",))
    async def update_robot(ctx: Ctx) -> Response:
        code = ctx.param("code")
        if not await run_in_threadpool(svc.register.exists, code):
            raise NotFound(ctx._("There is no stored robot with the code %(code)s.", code=code))
        return await save(ctx, code)

    @page("/admin/robots/{code}/versions")
    async def versions(ctx: Ctx) -> Response:
        code = ctx.param("code")
        history = await run_in_threadpool(svc.register.versions, code)
        return ctx.render("versions.html", code=code, versions=list(reversed(history)))

    @page("/admin/robots/{code}/diff")
    async def diff(ctx: Ctx) -> Response:
        code = ctx.param("code")
        history = {v.number: v for v in await run_in_threadpool(svc.register.versions, code)}
        a, b = parse_id(ctx.query("a")) or 0, parse_id(ctx.query("b")) or 0
        if a not in history or b not in history:
            raise NotFound(ctx._("Choose two versions of %(code)s that exist.", code=code))
        sections = authoring.diff_sections(history[a], history[b])
        return ctx.render(
            "diff.html", code=code, a=history[a], b=history[b], sections=sections, numbers=sorted(history, reverse=True)
        )

    @page("/admin/robots/{code}/activate", ("POST",))
    async def activate(ctx: Ctx) -> Response:
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

    @page("/admin/robots/{code}/adopt", ("POST",))
    async def adopt(ctx: Ctx) -> Response:
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
                fields={
                    "source": ctx._("Converted only in part (%(why)s): finish the code, then save.", why=adoption.note)
                }
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

    @page("/admin/robots/{code}/test-run", ("POST",))
    async def test_run(ctx: Ctx) -> Response:
        code = ctx.param("code")
        resolved = await read_off_loop(svc.registry.resolve, code)
        if resolved is None:
            raise NotFound(ctx._("There is no robot with the code %(code)s.", code=code))
        given = {k.removeprefix("input."): v for k, v in ctx.form if k.startswith("input.")}
        result = await authoring.test_run(
            resolved, given, svc.sandbox, document_id=ctx.field("document_id") or "DEAL_1", connections=svc.hub
        )
        return ctx.render("_test_result.html", result=result)

    # --- journal -----------------------------------------------------------------------------
    def journal_query(ctx: Ctx, state: str | None) -> dict[str, Any]:
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
            "filters": {k: ctx.query(k) for k in ("robot", "portal", "status", "since")},
            "fixed_state": state,
            "live": not before,
            "older": rows[-1].id if len(rows) == PAGE_SIZE else None,
            "query": urlencode({k: ctx.query(k) for k in ("robot", "portal", "status", "since") if ctx.query(k)}),
        }

    @page("/admin/journal")
    async def journal(ctx: Ctx) -> Response:
        return ctx.render("journal.html", **await run_in_threadpool(journal_query, ctx, None))

    @page("/admin/journal/dead")
    async def dead_letters(ctx: Ctx) -> Response:
        return ctx.render("journal.html", **await run_in_threadpool(journal_query, ctx, DEAD))

    @page("/admin/journal/rows")
    async def journal_rows(ctx: Ctx) -> Response:
        state = DEAD if ctx.query("dead") == "1" else None
        return ctx.render("_journal_rows.html", **await run_in_threadpool(journal_query, ctx, state))

    @page("/admin/journal/{inv_id}")
    async def journal_detail(ctx: Ctx) -> Response:
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

    @page("/admin/journal/{inv_id}/{action}", ("POST",))
    async def journal_action(ctx: Ctx) -> Response:
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

    # --- portals -----------------------------------------------------------------------------
    @page("/admin/portals")
    async def portals(ctx: Ctx) -> Response:
        def load() -> list[dict[str, Any]]:
            out = []
            wanted = {r.spec.code for r in svc.registry.all()}
            for inst in admin.portals():
                regs = svc.registrations.of(inst.member_id) if inst.active else {}
                out.append({"inst": inst, "registered": len(set(regs) & wanted), "wanted": len(wanted)})
            return out

        def recent_syncs() -> list[Any]:
            return svc.syncer.sync_log.recent(limit=20) if svc.syncer.sync_log else []

        return ctx.render(
            "portals.html",
            rows=await run_in_threadpool(load),
            syncs=await run_in_threadpool(recent_syncs),
            now=time.time(),
            cultures=sorted(LANGUAGE_FORMATS),
        )

    @page("/admin/portals/{member_id}/limits", ("POST",))
    async def portal_limits(ctx: Ctx) -> Response:
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

    @page("/admin/portals/{member_id}/culture", ("POST",))
    async def portal_culture(ctx: Ctx) -> Response:
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

    connections_view.register(admin)
    return admin
