"""The admin UI's Connections page: list, add and edit per kind (global or per portal), test, delete.

Secrets are write-only: the forms never carry a stored secret back, only whether one is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from b24robots.connections.config import AUTH_MODES, DEFAULTS, HELP, KINDS, SECRETS, redact_message
from b24robots.errors import B24RobotsError, NotFound

if TYPE_CHECKING:
    from b24robots.web.admin.base import Admin, Ctx

KIND_TITLES = {"http": "HTTP", "1c": "1C", "sql": "SQL"}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fields(kind: str, values: dict[str, Any], below: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, default in DEFAULTS[kind].items():
        inherited = below.get(key, default)
        out.append(
            {
                "key": key,
                "type": "bool" if isinstance(default, bool) else "text",
                "value": values.get(key),
                "text": _text(values.get(key)),
                "placeholder": "" if key == "ca_bundle" else _text(inherited),
                "help": HELP.get(key, ""),
            }
        )
    return out


def _form_values(ctx: Ctx) -> tuple[dict[str, str], dict[str, str], list[str]]:
    settings = {k[4:]: v for k, v in ctx.form if k.startswith("set.")}
    secrets = {k[7:]: v for k, v in ctx.form if k.startswith("secret.")}
    clear = [v for k, v in ctx.form if k == "clear"]
    return settings, secrets, clear


def add_connection_pages(admin: Admin) -> None:
    """Add /admin/connections, its forms and each connection's page, test and delete to the admin router."""
    svc = admin.svc
    page = admin.page
    store = svc.connections

    def users(name: str) -> list[str]:
        return [r.spec.code for r in svc.registry.all() if name in r.spec.connections]

    def domains() -> dict[str, str]:
        return {i.member_id: i.domain for i in admin.portals()}

    @page("/admin/connections")
    async def connections(ctx: Ctx) -> Response:
        def load() -> list[dict[str, Any]]:
            names = domains()
            return [
                {"info": i, "domain": names.get(i.member_id, i.member_id), "users": users(i.name)} for i in store.all()
            ]

        return ctx.render("connections.html", rows=await run_in_threadpool(load), kinds=list(KIND_TITLES.items()))

    def render_form(
        ctx: Ctx,
        *,
        kind: str,
        name: str,
        member_id: str,
        creating: bool,
        error: str = "",
        typed: dict[str, Any] | None = None,
    ) -> Response:
        values: dict[str, Any] = {}
        below: dict[str, Any] = {}
        secrets_set: tuple[str, ...] = ()
        if not creating:
            try:
                info = store.get(name, member_id)
                values, secrets_set = info.settings, info.secrets_set
            except NotFound:
                if not member_id:
                    raise
            if member_id:
                below = store.get(name).settings
        if typed:
            values = {**values, **{k: v for k, v in typed.items() if v != ""}}
        secrets = [(key, key in secrets_set, HELP.get(key, "")) for key in SECRETS[kind]]
        return ctx.render(
            "connection_edit.html",
            400 if error else 200,
            kind=kind,
            kind_title=KIND_TITLES[kind],
            name=name,
            member_id=member_id,
            domain=domains().get(member_id, member_id),
            creating=creating,
            error=error,
            fields=_fields(kind, values, below),
            secrets=secrets,
            values={"name": name},
            portals=[p for p in admin.portals() if p.active],
            users=users(name) if not creating else [],
            auth_modes=AUTH_MODES,
        )

    @page("/admin/connections/new")
    async def new_connection(ctx: Ctx) -> Response:
        kind = ctx.query("kind", "http")
        if kind not in KINDS:
            kind = "http"
        return await run_in_threadpool(render_form, ctx, kind=kind, name="", member_id="", creating=True)

    @page("/admin/connections", ("POST",))
    async def create_connection(ctx: Ctx) -> Response:
        kind, name, member_id = ctx.field("kind"), ctx.field("name").strip(), ctx.field("portal")
        settings, secrets, _ = _form_values(ctx)
        if kind not in KINDS:
            kind = "http"
        who = {"actor": ctx.actor, "address": ctx.address}
        try:
            if member_id:
                # a portal's values need the connection itself first: create both from one form
                await run_in_threadpool(lambda: store.add(name, kind, {}, {}, **who))
                await run_in_threadpool(lambda: store.set(name, settings, secrets, member_id=member_id, **who))
            else:
                await run_in_threadpool(lambda: store.add(name, kind, settings, secrets, **who))
        except B24RobotsError as exc:
            return await run_in_threadpool(
                render_form,
                ctx,
                kind=kind,
                name=name,
                member_id=member_id,
                creating=True,
                error=str(exc),
                typed=settings,
            )
        ctx.flash("success", ctx._("Connection %(name)s saved.", name=name))
        return ctx.redirect("/admin/connections")

    @page("/admin/connections/{name}")
    async def edit_connection(ctx: Ctx) -> Response:
        name, member_id = ctx.param("name"), ctx.query("portal")
        info = await run_in_threadpool(store.get, name)
        return await run_in_threadpool(render_form, ctx, kind=info.kind, name=name, member_id=member_id, creating=False)

    @page("/admin/connections/{name}", ("POST",))
    async def save_connection(ctx: Ctx) -> Response:
        name, member_id = ctx.param("name"), ctx.field("portal")
        info = await run_in_threadpool(store.get, name)
        settings, secrets, clear = _form_values(ctx)
        blank = [k for k, v in settings.items() if v == "" and k in DEFAULTS[info.kind]]
        try:
            current = (await run_in_threadpool(store.get, name, member_id)).settings if member_id else info.settings
        except NotFound:
            current = {}
        # a field emptied in the form removes that value (a portal then inherits the global one)
        clear = [*clear, *[k for k in blank if k in current]]
        try:
            await run_in_threadpool(
                lambda: store.set(
                    name, settings, secrets, member_id=member_id, clear=clear, actor=ctx.actor, address=ctx.address
                )
            )
        except B24RobotsError as exc:
            return await run_in_threadpool(
                render_form,
                ctx,
                kind=info.kind,
                name=name,
                member_id=member_id,
                creating=False,
                error=str(exc),
                typed=settings,
            )
        ctx.flash("success", ctx._("Connection %(name)s saved.", name=name))
        return ctx.redirect("/admin/connections")

    @page("/admin/connections/{name}/test", ("POST",))
    async def test_connection(ctx: Ctx) -> Response:
        name, member_id = ctx.param("name"), ctx.field("portal")
        config = await run_in_threadpool(store.resolve, name, member_id)
        if config is None:
            raise NotFound(f"no connection named {name!r}")
        try:
            seen = await run_in_threadpool(svc.hub.test, config)
            ctx.flash("success", ctx._("%(name)s works: %(seen)s", name=name, seen=seen))
        except B24RobotsError as exc:
            ctx.flash("error", ctx._("%(name)s failed: %(error)s", name=name, error=redact_message(str(exc), config)))
        return ctx.redirect("/admin/connections")

    @page("/admin/connections/{name}/delete", ("POST",))
    async def delete_connection(ctx: Ctx) -> Response:
        name, member_id = ctx.param("name"), ctx.field("portal")
        try:
            await run_in_threadpool(
                lambda: store.remove(name, member_id=member_id, users=users(name), actor=ctx.actor, address=ctx.address)
            )
            ctx.flash("success", ctx._("Connection %(name)s deleted.", name=name))
        except NotFound:
            raise
        except B24RobotsError as exc:
            ctx.flash("error", str(exc))
        return ctx.redirect("/admin/connections")
