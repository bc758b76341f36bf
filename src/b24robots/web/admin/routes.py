"""The admin UI's pages: sign-in, robots (list, editor, versions, diff, test run, adopt, sync),
the journal (live list, detail, retry, replay, dead letters) and portals.

Every page needs a signed-in admin; every POST needs the session's CSRF token. Endpoints take the
raw request (path values, query and form are read here), which keeps the signing-in, language and
CSRF handling in one wrapper instead of in each page.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from b24robots.errors import AdminAuthError, B24RobotsError, NotFound, TooManyAttempts
from b24robots.robots.params import localize
from b24robots.robots.registry import Resolved
from b24robots.sandbox import check_source
from b24robots.store.installations import Installation
from b24robots.store.journal import DEAD, STATES
from b24robots.store.users import AdminUser, Users
from b24robots.web.admin import logic
from b24robots.web.admin.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, SessionCodec
from b24robots.web.admin.i18n import COOKIE as LANG_COOKIE
from b24robots.web.admin.i18n import LANGUAGES, Translator, environment, pick_language
from b24robots.web.services import Services

log = logging.getLogger("b24robots.admin")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}
SINCE = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
PAGE_SIZE = 100


def safe_next(target: str | None, default: str = "/admin/robots") -> str:
    """Only our own admin pages are redirect targets (no open redirects)."""
    if target and target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@dataclass
class Ctx:
    """One admin request: the session, the language, the signed-in user and the submitted form."""

    request: Request
    admin: Admin
    session: Session
    t: Translator
    user: AdminUser | None
    form: list[tuple[str, str]] = field(default_factory=list)

    def _(self, message: str, **values: Any) -> str:
        return self.t._(message, **values)

    def param(self, name: str) -> str:
        return str(self.request.path_params.get(name, ""))

    def query(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default)

    def field(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.form if k == name), default)

    @property
    def htmx(self) -> bool:
        return self.request.headers.get("HX-Request") == "true"

    def flash(self, kind: str, message: str) -> None:
        self.session.add_flash(kind, message)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        env = environment(self.t.lang)
        html = env.get_template(template).render(
            user=self.user,
            csrf=self.session.csrf,
            lang=self.t.lang,
            path=self.request.url.path,
            full_path=str(self.request.url.path) + (f"?{self.request.url.query}" if self.request.url.query else ""),
            flash=self.session.pop_flash() if not template.startswith("_") else [],
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def redirect(self, url: str) -> Response:
        if self.htmx:
            return Response(status_code=204, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)


Endpoint = Callable[[Ctx], Awaitable[Response]]


class Admin:
    def __init__(self, services: Services) -> None:
        self.svc = services
        self.users = Users(services.db)
        # a keyed hash under the vault key: follows B24R_SECRET_KEY / the key file, never stored anywhere
        key = services.vault.digest("b24robots admin session signing key v1")
        self.codec = SessionCodec(key, secure=services.settings.public_url.startswith("https://"))
        self.router = APIRouter(include_in_schema=False)

    # --- plumbing ----------------------------------------------------------------------------
    def page(
        self, path: str, methods: tuple[str, ...] = ("GET",), *, public: bool = False
    ) -> Callable[[Endpoint], Endpoint]:
        def register(fn: Endpoint) -> Endpoint:
            async def endpoint(request: Request) -> Response:
                response = await self._handle(request, fn, public)
                response.headers.update(SECURITY_HEADERS)
                return response

            endpoint.__name__ = f"admin_{fn.__name__}"
            self.router.add_api_route(path, endpoint, methods=list(methods), include_in_schema=False)
            return fn

        return register

    async def _handle(self, request: Request, fn: Endpoint, public: bool) -> Response:
        session = self.codec.load(request.cookies.get(COOKIE))
        lang = pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
        user = None
        if session.user_id is not None:
            user = await run_in_threadpool(self.users.get, session.user_id)
            if user is None:  # the account was deleted: the session ends with it
                session.logout()
        ctx = Ctx(request=request, admin=self, session=session, t=Translator(lang), user=user)
        if request.method == "POST":
            form = await request.form()
            ctx.form = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
            given = request.headers.get(CSRF_HEADER) or ctx.field(CSRF_FIELD)
            if not session.csrf_ok(given):
                response: Response = ctx.render(
                    "error.html",
                    403,
                    title=ctx._("Form expired"),
                    message=ctx._(
                        "The form was open too long or came from another site. Reload the page and try again."
                    ),
                )
                self.codec.save(response, session)
                return response
        if user is None and not public:
            target = "/admin/login?" + urlencode({"next": ctx.request.url.path})
            if ctx.htmx:
                response = Response(status_code=401, headers={"HX-Redirect": target})
            else:
                response = RedirectResponse(target, status_code=303)
        else:
            try:
                response = await fn(ctx)
            except NotFound as exc:
                response = ctx.render("error.html", 404, title=ctx._("Not found"), message=str(exc))
        if session.changed:
            self.codec.save(response, session)
        return response

    # --- shared lookups ----------------------------------------------------------------------
    def portals(self) -> list[Installation]:
        return self.svc.installations.list()

    def sync_state(
        self, resolved: Resolved, portals: list[Installation], regs: dict[str, dict[str, Any]]
    ) -> list[dict[str, str]]:
        """Per active portal: ok (registered as now declared), outdated (registered, changed since) or missing."""
        out = []
        fingerprint = resolved.spec.fingerprint(self.svc.settings.handler_url)
        for inst in portals:
            if not inst.active:
                continue
            reg = regs.get(inst.member_id, {}).get(resolved.spec.code)
            state = "missing" if reg is None else "ok" if reg == (resolved.spec.kind, fingerprint) else "outdated"
            out.append({"domain": inst.domain, "state": state})
        return out

    async def sync_all(self, ctx: Ctx, member_id: str | None = None) -> None:
        """Run a sync on every active portal (or one) and leave the outcome as flash messages."""
        targets = [i for i in self.portals() if i.active and (member_id is None or i.member_id == member_id)]
        if not targets:
            ctx.flash(
                "warning", ctx._("No portal has installed the application yet, so there is nowhere to register robots.")
            )
            return
        for inst in targets:
            report = await self.svc.syncer.sync(inst.member_id)
            counts = {a: sum(1 for c in report.changes if c.action == a) for a in ("add", "update", "delete")}
            if report.error:
                ctx.flash(
                    "error", ctx._("%(portal)s: registration failed: %(error)s", portal=inst.domain, error=report.error)
                )
            else:
                ctx.flash(
                    "success",
                    ctx._(
                        "%(portal)s: %(add)d added, %(update)d updated, %(delete)d removed",
                        portal=inst.domain,
                        **counts,
                    ),
                )


def build_router(services: Services) -> APIRouter:
    """The admin UI's routes, all under /admin."""
    admin = Admin(services)
    svc = services
    page = admin.page

    # --- sign-in -----------------------------------------------------------------------------
    @page("/admin", public=True)
    async def home(ctx: Ctx) -> Response:
        return ctx.redirect("/admin/robots" if ctx.user else "/admin/login")

    @page("/admin/login", public=True)
    async def login_form(ctx: Ctx) -> Response:
        if ctx.user:
            return ctx.redirect(safe_next(ctx.query("next")))
        has_users = await run_in_threadpool(admin.users.count)
        return ctx.render("login.html", next=safe_next(ctx.query("next")), error="", username="", has_users=has_users)

    @page("/admin/login", ("POST",), public=True)
    async def login(ctx: Ctx) -> Response:
        username, password = ctx.field("username").strip(), ctx.field("password")
        address = ctx.request.client.host if ctx.request.client else "unknown"
        target = safe_next(ctx.field("next"))
        try:
            user = await run_in_threadpool(admin.users.authenticate, username, password, address)
        except TooManyAttempts as exc:
            minutes = int(exc.retry_after // 60) + 1
            msg = ctx._("Too many failed sign-ins. Try again in %(minutes)d min.", minutes=minutes)
            response = ctx.render("login.html", 429, next=target, error=msg, username=username, has_users=True)
            response.headers["Retry-After"] = str(int(exc.retry_after) + 1)
            return response
        except AdminAuthError:
            msg = ctx._("Wrong user name or password.")
            return ctx.render("login.html", 401, next=target, error=msg, username=username, has_users=True)
        ctx.session.login(user.id)
        log.info("admin %s signed in", user.username)
        return ctx.redirect(target)

    @page("/admin/login/link/{token}", public=True)
    async def login_link(ctx: Ctx) -> Response:
        try:
            user = await run_in_threadpool(admin.users.redeem_link_token, ctx.param("token"))
        except AdminAuthError as exc:
            msg = ctx._("This login link is not valid any more (links work once, for 10 minutes).")
            log.info("login link refused: %s", exc)
            return ctx.render("login.html", 401, next="/admin/robots", error=msg, username="", has_users=True)
        ctx.session.login(user.id)
        log.info("admin %s signed in with a one-time link", user.username)
        return ctx.redirect("/admin/robots")

    @page("/admin/logout", ("POST",), public=True)
    async def logout(ctx: Ctx) -> Response:
        ctx.session.logout()
        return ctx.redirect("/admin/login")

    @page("/admin/lang/{lang}", public=True)
    async def set_language(ctx: Ctx) -> Response:
        lang = ctx.param("lang")
        response = RedirectResponse(safe_next(ctx.query("next")), status_code=303)
        if lang in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/admin", samesite="lax")
        return response

    # --- robots ------------------------------------------------------------------------------
    @page("/admin/robots")
    async def robots(ctx: Ctx) -> Response:
        def load() -> dict[str, Any]:
            portals = admin.portals()
            regs = {i.member_id: svc.installations.registrations(i.member_id) for i in portals if i.active}
            stored = {r.code: r for r in svc.register.list()}
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
            form=logic.empty_form(),
            errors=logic.FormErrors(),
            new=True,
            types=logic.PARAM_TYPES,
            info=None,
            module_twin=False,
        )

    async def save(ctx: Ctx, code: str | None) -> Response:
        form = logic.form_from_fields(ctx.form)
        base = None
        if code is not None:
            base = (await run_in_threadpool(svc.register.version, code)).document
            form["code"] = code  # the code of an existing robot does not change
        spec, errors = logic.spec_from_form(form, base)
        if code is None and not errors.fields.get("code"):
            if await run_in_threadpool(svc.register.exists, form["code"]):
                errors.fields["code"] = ctx._("A stored robot with this code exists already; open it to edit it.")
            elif svc.registry.router.get(form["code"]) is not None:
                errors.fields["code"] = ctx._("A module robot has this code; open it and use Adopt to edit it here.")
        if errors or spec is None:
            info = await run_in_threadpool(svc.register.version, code) if code else None
            return ctx.render(
                "robot_edit.html",
                422,
                form=form,
                errors=errors,
                new=code is None,
                types=logic.PARAM_TYPES,
                info=info,
                module_twin=False,
            )
        author = ctx.user.username if ctx.user else "admin"
        before = (await run_in_threadpool(svc.register.version, code)).number if code else 0
        info = await run_in_threadpool(
            lambda: svc.register.save(spec, form["source"], author=author, comment=form["comment"])
        )
        if info.number == before:
            ctx.flash("info", ctx._("Nothing changed: version %(n)d stays active.", n=info.number))
        else:
            ctx.flash(
                "success",
                ctx._(
                    "Saved version %(n)d; it is active now. Register it in Bitrix24 to update the portals.",
                    n=info.number,
                ),
            )
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

    @page("/admin/robots/{code}")
    async def robot(ctx: Ctx) -> Response:
        code = ctx.param("code")
        if await run_in_threadpool(svc.register.exists, code):
            info = await run_in_threadpool(svc.register.version, code)
            form = logic.form_from_document(info.document, info.source)
            resolved = svc.registry.resolve(code)
            return ctx.render(
                "robot_edit.html",
                form=form,
                errors=logic.FormErrors(),
                new=False,
                types=logic.PARAM_TYPES,
                info=info,
                module_twin=code in svc.registry.router,
                inputs=resolved.spec.inputs if resolved else (),
            )
        resolved = svc.registry.resolve(code)
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
        try:
            a, b = int(ctx.query("a")), int(ctx.query("b"))
        except ValueError:
            a, b = 0, 0
        if a not in history or b not in history:
            raise NotFound(ctx._("Choose two versions of %(code)s that exist.", code=code))
        lines = logic.diff_versions(history[a], history[b])
        return ctx.render(
            "diff.html", code=code, a=history[a], b=history[b], lines=lines, numbers=sorted(history, reverse=True)
        )

    @page("/admin/robots/{code}/activate", ("POST",))
    async def activate(ctx: Ctx) -> Response:
        code = ctx.param("code")
        number = ctx.field("number")
        if not number.isdigit():
            raise NotFound(ctx._("Choose a version to activate."))
        info = await run_in_threadpool(svc.register.activate, code, int(number))
        ctx.flash(
            "success",
            ctx._(
                "Version %(n)d of %(code)s is active now. Register it in Bitrix24 if its parameters changed.",
                n=info.number,
                code=code,
            ),
        )
        return ctx.redirect(f"/admin/robots/{quote(code)}/versions")

    @page("/admin/robots/{code}/adopt", ("POST",))
    async def adopt(ctx: Ctx) -> Response:
        code = ctx.param("code")
        module = svc.registry.router.get(code)
        if module is None:
            raise NotFound(ctx._("There is no module robot with the code %(code)s.", code=code))
        if await run_in_threadpool(svc.register.exists, code):
            return ctx.redirect(f"/admin/robots/{quote(code)}")
        adoption = logic.adopt_source(module)
        if not adoption.converted:
            form = logic.form_from_document(module.spec.to_document(), adoption.source)
            form["comment"] = "adopted from the module robot"
            errors = logic.FormErrors(
                fields={
                    "source": ctx._("Converted only in part (%(why)s): finish the code, then save.", why=adoption.note)
                }
            )
            return ctx.render(
                "robot_edit.html",
                form=form,
                errors=errors,
                new=True,
                adopting=True,
                types=logic.PARAM_TYPES,
                info=None,
                module_twin=True,
            )
        author = ctx.user.username if ctx.user else "admin"
        info = await run_in_threadpool(
            lambda: svc.register.save(
                module.spec, adoption.source, author=author, comment="adopted from the module robot", origin="adopted"
            )
        )
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
        resolved = svc.registry.resolve(code)
        if resolved is None:
            raise NotFound(ctx._("There is no robot with the code %(code)s.", code=code))
        given = {k.removeprefix("input."): v for k, v in ctx.form if k.startswith("input.")}
        result = await logic.test_run(resolved, given, svc.sandbox, document_id=ctx.field("document_id") or "DEAL_1")
        return ctx.render("_test_result.html", result=result)

    # --- journal -----------------------------------------------------------------------------
    def journal_query(ctx: Ctx, state: str | None) -> dict[str, Any]:
        portals = {i.id: i for i in admin.portals()}
        portal = ctx.query("portal")
        installation_id = next((i.id for i in portals.values() if i.member_id == portal), None)
        since = SINCE.get(ctx.query("since"))
        status = state or (ctx.query("status") if ctx.query("status") in STATES else None)
        before = ctx.query("before")
        rows = svc.journal.list(
            state=status,
            robot=ctx.query("robot") or None,
            installation_id=installation_id,
            since=time.time() - since if since else None,
            limit=PAGE_SIZE,
            before_id=int(before) if before.isdigit() else None,
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
        if not inv_id.isdigit():
            raise NotFound(ctx._("There is no journal entry %(id)s.", id=inv_id))
        inv = await run_in_threadpool(svc.journal.get, int(inv_id))
        try:
            portal = (await run_in_threadpool(svc.installations.by_id, inv.installation_id)).domain
        except NotFound:
            portal = "?"
        return ctx.render("journal_detail.html", inv=inv, portal=portal)

    @page("/admin/journal/{inv_id}/{action}", ("POST",))
    async def journal_action(ctx: Ctx) -> Response:
        inv_id, action = ctx.param("inv_id"), ctx.param("action")
        if not inv_id.isdigit() or action not in ("retry", "replay"):
            raise NotFound(ctx._("There is no journal entry %(id)s.", id=inv_id))
        try:
            if action == "retry":
                inv = await run_in_threadpool(svc.journal.retry, int(inv_id))
                ctx.flash("success", ctx._("Entry %(id)d is queued to run again.", id=inv.id))
            else:
                inv = await run_in_threadpool(svc.journal.replay, int(inv_id))
                ctx.flash("success", ctx._("Replayed as entry %(id)d.", id=inv.id))
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
                regs = svc.installations.registrations(inst.member_id) if inst.active else {}
                out.append({"inst": inst, "registered": len(set(regs) & wanted), "wanted": len(wanted)})
            return out

        return ctx.render("portals.html", rows=await run_in_threadpool(load), now=time.time())

    @page("/admin/portals/{member_id}/limits", ("POST",))
    async def portal_limits(ctx: Ctx) -> Response:
        member_id = ctx.param("member_id")
        try:
            rate, burst = float(ctx.field("rate")), int(ctx.field("burst"))
            inst = await run_in_threadpool(svc.installations.set_limits, member_id, rate, burst)
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

    @page("/admin/portals/{member_id}/sync", ("POST",))
    async def portal_sync(ctx: Ctx) -> Response:
        inst = await run_in_threadpool(svc.installations.get, ctx.param("member_id"))
        await admin.sync_all(ctx, inst.member_id)
        return ctx.redirect("/admin/portals")

    return admin.router
