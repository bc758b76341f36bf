"""The plumbing of every admin page: the signed-in check, the session, the language, the CSRF check and
bounded form bodies, in one wrapper instead of in each page.

A POST is refused before its body is read when nobody is signed in (for pages that need a user), when
its type is not a urlencoded form, or when it declares more than `B24R_ADMIN_MAX_BODY_BYTES`; a body
that grows past the cap while it streams is refused as well.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from b24robots.errors import NotFound
from b24robots.fields import as_int
from b24robots.jobs.sync import NO_APP, NOT_OURS, UNCONFIRMED, Change
from b24robots.robots.registry import Resolved
from b24robots.robots.spec import RobotSpec
from b24robots.store.audit import MAX_ID
from b24robots.store.db import read_off_loop
from b24robots.store.installation_rows import Installation
from b24robots.store.users import AdminUser, Users
from b24robots.web.admin.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, SessionCodec
from b24robots.web.admin.i18n import COOKIE as LANG_COOKIE
from b24robots.web.admin.i18n import Translator, environment, pick_language
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
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 5000


HOME = "/admin/dashboard"  # the first page after sign-in


def safe_next(target: str | None, default: str = HOME) -> str:
    """Only our own admin pages are redirect targets (no open redirects)."""
    if target and target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def parse_id(text: str) -> int | None:
    """A row id from a path or query value: digits only and within what the database holds, else None
    (so `?before=99999999999999999999999` is a 404 or an ignored filter, never an overflow)."""
    return as_int(text, maximum=MAX_ID)


class BodyRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    def address(self) -> str:
        """The client's address (a trusted proxy's X-Forwarded-For is already applied by the server)."""
        return self.request.client.host if self.request.client else "unknown"

    @property
    def actor(self) -> str:
        return self.user.username if self.user else "(anonymous)"

    def audit(self, action: str, target: str = "", **details: Any) -> None:
        """An audit entry in the name of the signed-in user (call from a worker thread or via `audit_soon`)."""
        self.admin.svc.audit.record(action, actor=self.actor, target=target, address=self.address, details=details)

    async def audit_soon(self, action: str, target: str = "", **details: Any) -> None:
        await run_in_threadpool(lambda: self.audit(action, target, **details))

    @property
    def htmx(self) -> bool:
        return self.request.headers.get("HX-Request") == "true"

    def flash(self, kind: str, message: str) -> None:
        self.session.add_flash(kind, message)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        env = environment(self.t.lang)
        pool = self.admin.svc.sandbox
        # every page of a signed-in admin says so while stored code runs with weaker isolation
        warning = pool.isolation_warning if pool is not None and self.user else None
        html = env.get_template(template).render(
            sandbox_warning=warning,
            sandbox_level=pool.isolation_level if pool is not None else "",
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
            # HEAD answers like GET, headers only (RFC 9110 9.3.2): the body is dropped here, not by the
            # server, so every transport sees the same
            self.router.add_api_route(path, endpoint, methods=list(methods), include_in_schema=False)
            if "GET" in methods:

                async def head(request: Request) -> Response:
                    response = await endpoint(request)
                    length = response.headers.get("content-length")
                    bare = Response(status_code=response.status_code, headers=dict(response.headers))
                    if length is not None:
                        bare.headers["content-length"] = length
                    return bare

                head.__name__ = f"admin_{fn.__name__}_head"
                self.router.add_api_route(path, head, methods=["HEAD"], include_in_schema=False)
            return fn

        return register

    async def signed_in(self, request: Request) -> AdminUser | None:
        """The admin whose live session the request carries, if any."""
        session = self.codec.load(request.cookies.get(COOKIE))
        return await self._user_of(session)

    async def _user_of(self, session: Session) -> AdminUser | None:
        if session.token is None:
            return None
        cfg = self.svc.settings
        return await run_in_threadpool(
            lambda: self.users.session_user(
                session.token or "", idle=cfg.admin_session_idle_seconds, lifetime=cfg.admin_session_max_seconds
            )
        )

    async def read_form(self, request: Request) -> list[tuple[str, str]]:
        """The fields of a urlencoded form body within the cap; BodyRefused otherwise."""
        cap = self.svc.settings.admin_max_body_bytes
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length", "")
        if kind != FORM_TYPE and (kind or length not in ("", "0")):
            raise BodyRefused(415, f"a form must be sent as {FORM_TYPE}")
        declared = as_int(length, maximum=None)
        if length and (declared is None or declared > cap):
            raise BodyRefused(413, f"the form is larger than {cap} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise BodyRefused(413, f"the form is larger than {cap} bytes")
            chunks.append(chunk)
        try:
            text = b"".join(chunks).decode("utf-8")
            return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise BodyRefused(400, "the form is not valid UTF-8 urlencoded text") from None

    async def _handle(self, request: Request, fn: Endpoint, public: bool) -> Response:
        session = self.codec.load(request.cookies.get(COOKIE))
        lang = pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
        user = await self._user_of(session)
        if session.token is not None and user is None:  # signed out, revoked or timed out: the session ends
            session.logout()
        ctx = Ctx(request=request, admin=self, session=session, t=Translator(lang), user=user)
        response: Response
        if user is None and not public:
            target = "/admin/login?" + urlencode({"next": ctx.request.url.path})
            if ctx.htmx:
                response = Response(status_code=401, headers={"HX-Redirect": target})
            else:
                response = RedirectResponse(target, status_code=303)
            if session.changed:
                self.codec.save(response, session)
            return response
        if request.method == "POST":
            try:
                ctx.form = await self.read_form(request)
            except BodyRefused as exc:
                cap = self.svc.settings.admin_max_body_bytes
                messages = {
                    413: ctx._("The form is larger than %(size)d bytes.", size=cap),
                    415: ctx._("A form must be sent as application/x-www-form-urlencoded."),
                }
                message = messages.get(exc.status, ctx._("The form is not valid UTF-8 text."))
                response = ctx.render("error.html", exc.status, title=ctx._("Form refused"), message=message)
                response.headers["Connection"] = "close"  # the rest of the body is not read
                return response
            given = request.headers.get(CSRF_HEADER) or ctx.field(CSRF_FIELD)
            if not session.csrf_ok(given):
                response = ctx.render(
                    "error.html",
                    403,
                    title=ctx._("Form expired"),
                    message=ctx._(
                        "The form was open too long or came from another site. Reload the page and try again."
                    ),
                )
                self.codec.save(response, session)
                return response
        try:
            response = await fn(ctx)
        except NotFound as exc:
            response = ctx.render("error.html", 404, title=ctx._("Not found"), message=str(exc))
        if session.changed:
            self.codec.save(response, session)
        return response

    # --- shared lookups ----------------------------------------------------------------------
    def connection_names(self) -> list[str]:
        return sorted({i.name for i in self.svc.connections.all()})

    def portals(self) -> list[Installation]:
        return self.svc.installations.all()

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

    def in_step(self, code: str) -> tuple[int, int]:
        """(portals that have `code` registered exactly as it is declared now, active portals)."""
        resolved = self.svc.registry.resolve(code)
        portals = [i for i in self.portals() if i.active]
        regs = {i.member_id: self.svc.registrations.of(i.member_id) for i in portals}
        states = self.sync_state(resolved, portals, regs) if resolved else []
        return sum(1 for s in states if s["state"] == "ok"), len(portals)

    async def registration_note(self, ctx: Ctx, code: str, before: dict[str, Any]) -> str:
        """What a new active version means for the portals: nothing when only the code changed (the handler
        is called the same way), a new registration when name, parameters or flags changed."""
        url = self.svc.settings.handler_url
        resolved = await read_off_loop(self.svc.registry.resolve, code)
        same = resolved is not None and RobotSpec.from_document(before).fingerprint(url) == resolved.spec.fingerprint(
            url
        )
        ok, total = await run_in_threadpool(self.in_step, code)
        if same:
            return ctx._(
                "Name, parameters and flags are unchanged, so no new registration is needed; "
                "portals in step: %(ok)d of %(total)d.",
                ok=ok,
                total=total,
            )
        return ctx._(
            "Its name, parameters or flags changed: register it in Bitrix24 to update the portals "
            "(in step now: %(ok)d of %(total)d).",
            ok=ok,
            total=total,
        )

    async def sync_all(
        self, ctx: Ctx, member_id: str | None = None, confirm: Callable[[list[Change]], bool] | None = None
    ) -> None:
        """Run a sync on every active portal (or one) and leave the outcome as flash messages.

        Without `confirm` only robots disabled or deleted in the register are deleted (see Syncer.sync);
        the other deletions wait for the portal page's confirmed re-sync."""
        portals = await run_in_threadpool(self.portals)
        targets = [i for i in portals if i.active and (member_id is None or i.member_id == member_id)]
        if not targets:
            ctx.flash(
                "warning", ctx._("No portal has installed the application yet, so there is nowhere to register robots.")
            )
            return
        for inst in targets:
            report = await self.svc.syncer.sync(inst.member_id, confirm=confirm, origin="ui")
            counts = {a: sum(1 for c in report.changes if c.action == a) for a in ("add", "update", "delete")}
            kept = [c for c in report.changes if c.action == "keep"]
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
            for note, why in (
                (UNCONFIRMED, ctx._("deleting needs confirmation: use Re-sync on the Portals page")),
                (NO_APP, ctx._("no robots module is loaded (set B24R_APP), so module robots are not deleted")),
                (NOT_OURS, ctx._("not registered by this server, so left alone")),
            ):
                codes = [c.code for c in kept if c.note == note]
                if codes:
                    ctx.flash(
                        "warning",
                        ctx._(
                            "%(portal)s: not deleted: %(codes)s (%(why)s)",
                            portal=inst.domain,
                            codes=", ".join(codes),
                            why=why,
                        ),
                    )
