"""Admin pages for the way back into Bitrix24: triggers (module and register ones, registration per
portal, adding, renaming and removing register triggers, recent fires, a "Fire" form for testing,
business-process starts) and API keys for the inbound API (create — the
key is shown once, in the answer to the form, never stored in the session —, scope, last use, revoke).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from b24robots.errors import B24RobotsError, DeclarationError
from b24robots.fields import INT32_MAX, as_int
from b24robots.jobs.trigger_sync import portal_state
from b24robots.robots.params import LocalizedText
from b24robots.robots.triggers import Entity, TriggerSpec
from b24robots.store.journal import call_status
from b24robots.web.admin.base import Admin, Ctx, parse_id

RECENT = 30


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def form_name(en: str, ru: str) -> LocalizedText | None:
    """The NAME from the form's English and Russian fields: plain when only English is given."""
    texts = {lang: text.strip() for lang, text in (("en", en), ("ru", ru)) if text.strip()}
    if not texts:
        return None
    return texts["en"] if set(texts) == {"en"} else texts


def add_trigger_pages(admin: Admin) -> None:
    """Add /admin/triggers and /admin/api-keys to the admin router."""
    svc = admin.svc
    page = admin.page

    def triggers_view() -> dict[str, Any]:
        portals = [i for i in admin.portals() if i.active]
        declared = svc.registry.triggers()
        states: dict[str, dict[str, str]] = {}
        for inst in portals:
            for spec in declared:
                states.setdefault(spec.code, {})[inst.domain] = portal_state(
                    svc.registrations, inst.member_id, spec, inst.language or "en"
                )
        sources = {spec.code: svc.registry.trigger_source(spec.code) or "" for spec in declared}
        domains = {i.id: i.domain for i in admin.portals()}
        fires = [
            {"inv": inv, "status": call_status(inv), "domain": domains.get(inv.installation_id, "?")}
            for inv in svc.journal.list_calls(limit=RECENT)
        ]
        return {"triggers": declared, "portals": portals, "states": states, "sources": sources, "fires": fires}

    async def render_triggers(ctx: Ctx, status: int = 200, **extra: Any) -> Response:
        values = await run_in_threadpool(triggers_view)
        values.setdefault("form", {})
        values.setdefault("add_form", {})
        values.update(extra)
        return ctx.render("triggers.html", status, **values)

    @page("/admin/triggers")
    async def triggers(ctx: Ctx) -> Response:
        return await render_triggers(ctx)

    def author(ctx: Ctx) -> str:
        return ctx.user.username if ctx.user else "admin"

    @page("/admin/triggers/add", ("POST",))
    async def add(ctx: Ctx) -> Response:
        code, en, ru = ctx.field("code").strip(), ctx.field("name_en"), ctx.field("name_ru")
        try:
            name = form_name(en, ru)
            if name is None:
                raise DeclarationError(ctx._("Give the trigger a name (in English, Russian or both)."))
            spec = TriggerSpec(code, name)
            svc.registry.check_register_trigger(code)
            await run_in_threadpool(
                lambda: svc.trigger_register.save(
                    spec, author=author(ctx), actor=ctx.actor, address=ctx.address, must_exist=False
                )
            )
        except B24RobotsError as exc:
            form = {"code": code, "name_en": en, "name_ru": ru}
            return await render_triggers(ctx, 422, add_error=str(exc), add_form=form)
        ctx.flash("success", ctx._("Trigger %(code)s is added. Re-sync the portals to register it there.", code=code))
        return ctx.redirect("/admin/triggers")

    @page("/admin/triggers/{code}/edit", ("POST",))
    async def edit(ctx: Ctx) -> Response:
        code, en, ru = ctx.param("code"), ctx.field("name_en"), ctx.field("name_ru")
        current = await run_in_threadpool(svc.trigger_register.get, code)
        try:
            name = form_name(en, ru)
            if name is None:
                raise DeclarationError(ctx._("Give the trigger a name (in English, Russian or both)."))
            saved = await run_in_threadpool(
                lambda: svc.trigger_register.save(
                    TriggerSpec(current.code, name), author=author(ctx), actor=ctx.actor, address=ctx.address,
                    must_exist=True,
                )
            )  # fmt: skip
        except B24RobotsError as exc:
            return await render_triggers(ctx, 422, edit_error=str(exc), edit_code=current.code)
        if saved.action == "same":
            ctx.flash("info", ctx._("Trigger %(code)s has this name already.", code=current.code))
        else:
            ctx.flash(
                "success",
                ctx._(
                    "Trigger %(code)s: version %(n)d is saved. Re-sync the portals to rename it there.",
                    code=current.code,
                    n=saved.version.number,
                ),
            )
        return ctx.redirect("/admin/triggers")

    @page("/admin/triggers/{code}/remove", ("POST",))
    async def remove(ctx: Ctx) -> Response:
        code = ctx.param("code")
        current = await run_in_threadpool(svc.trigger_register.get, code)
        if ctx.field("confirmed") != "1":
            return ctx.render(
                "confirm.html",
                title=ctx._("Remove the trigger"),
                question=ctx._(
                    "Remove trigger %(code)s? The next sync deletes it from every portal this server registered it "
                    "on, and automation rules that wait for it stop firing. Its versions are kept as history.",
                    code=current.code,
                ),
                action=f"/admin/triggers/{quote(current.code)}/remove",
                fields={},
                yes=ctx._("Remove"),
                cancel="/admin/triggers",
                items=[],
            )
        await run_in_threadpool(lambda: svc.trigger_register.remove(code, actor=ctx.actor, address=ctx.address))
        ctx.flash(
            "success",
            ctx._("Trigger %(code)s is removed. Re-sync the portals to delete it there.", code=current.code),
        )
        return ctx.redirect("/admin/triggers")

    @page("/admin/triggers/fire", ("POST",))
    async def fire(ctx: Ctx) -> Response:
        portal, code, entity_text = ctx.field("portal"), ctx.field("trigger"), ctx.field("entity").strip()
        key = ctx.field("key").strip() or None
        try:
            entity = Entity.parse(entity_text)
            fired = await svc.outbound.fire_trigger(portal, code, entity, origin="ui", key=key)
            await ctx.audit_soon("trigger.fire", code, entity=str(entity), entry=fired.entry.id)
        except B24RobotsError as exc:
            form = {"portal": portal, "trigger": code, "entity": entity_text, "key": key or ""}
            return await render_triggers(ctx, 422, error=str(exc), form=form)
        if fired.created:
            message = ctx._(
                "Trigger %(code)s fired for %(entity)s: journal entry %(id)d.",
                code=code,
                entity=str(entity),
                id=fired.entry.id,
            )
            ctx.flash("success", message)
        else:
            message = ctx._(
                "This idempotency key was used already: journal entry %(id)d, not fired again.", id=fired.entry.id
            )
            ctx.flash("warning", message)
        return ctx.redirect("/admin/triggers")

    @page("/admin/triggers/start", ("POST",))
    async def start(ctx: Ctx) -> Response:
        portal, template, entity_text = ctx.field("portal"), ctx.field("template").strip(), ctx.field("entity").strip()
        try:
            template_id = as_int(template, minimum=1, maximum=INT32_MAX)
            if template_id is None:
                raise B24RobotsError(ctx._("Give the template id as a number (see the business process's settings)."))
            entity = Entity.parse(entity_text)
            fired = await svc.outbound.start_workflow(portal, template_id, entity, origin="ui")
            await ctx.audit_soon("workflow.start", template, entity=str(entity), entry=fired.entry.id)
        except B24RobotsError as exc:
            form = {"portal": portal, "template": template, "entity": entity_text}
            return await render_triggers(ctx, 422, start_error=str(exc), form=form)
        message = ctx._(
            "Business process %(id)s started on %(entity)s: journal entry %(entry)d.",
            id=template,
            entity=str(entity),
            entry=fired.entry.id,
        )
        ctx.flash("success", message)
        return ctx.redirect("/admin/triggers")

    # --- API keys ----------------------------------------------------------------------------
    async def render_keys(ctx: Ctx, status: int = 200, **extra: Any) -> Response:
        keys = await run_in_threadpool(svc.apikeys.all)
        values: dict[str, Any] = {
            "keys": keys,
            "portals": [i for i in admin.portals() if i.active],
            "triggers": svc.registry.triggers(),
            "form": {},
            "now": time.time(),
        }
        values.update(extra)
        return ctx.render("api_keys.html", status, **values)

    @page("/admin/api-keys")
    async def api_keys(ctx: Ctx) -> Response:
        return await render_keys(ctx)

    @page("/admin/api-keys", ("POST",))
    async def create_key(ctx: Ctx) -> Response:
        name, portal = ctx.field("name"), ctx.field("portal")
        chosen = [v for k, v in ctx.form if k == "trigger"]
        triggers = chosen
        templates = _split(ctx.field("templates"))
        form = {"name": name, "portal": portal, "chosen": chosen, "templates": ctx.field("templates")}
        try:
            inst = await run_in_threadpool(svc.installations.get, portal)
            author = ctx.user.username if ctx.user else "admin"
            key, plaintext = await run_in_threadpool(
                lambda: svc.apikeys.create(
                    name, inst.id, triggers=triggers, templates=templates, created_by=author, address=ctx.address
                )
            )
        except B24RobotsError as exc:
            return await render_keys(ctx, 422, error=str(exc), form=form)
        # shown in this answer only; it never goes into the session, the audit log or a log
        response = await render_keys(ctx, 201, created=key, plaintext=plaintext)
        response.headers["Cache-Control"] = "no-store"
        return response

    @page("/admin/api-keys/{key_id}/revoke", ("POST",))
    async def revoke_key(ctx: Ctx) -> Response:
        key_id = ctx.param("key_id")
        number = parse_id(key_id)
        if number is not None:
            key = await run_in_threadpool(lambda: svc.apikeys.revoke(number, actor=ctx.actor, address=ctx.address))
            ctx.flash("success", ctx._("API key %(name)s is revoked.", name=key.name))
        return ctx.redirect("/admin/api-keys")
