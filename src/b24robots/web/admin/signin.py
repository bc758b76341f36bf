"""Sign-in pages (password, one-time link), sign-out, sign-out everywhere, the language switch and the
audit log page."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from b24robots.errors import AdminAuthError, TooManyAttempts
from b24robots.web.admin.auth import DEVICE_COOKIE
from b24robots.web.admin.base import HOME, Admin, Ctx, parse_id, safe_next
from b24robots.web.admin.i18n import COOKIE as LANG_COOKIE
from b24robots.web.admin.i18n import LANGUAGES

log = logging.getLogger("b24robots.admin")

AUDIT_PAGE = 100
# what the audit page can filter on: a prefix of actions
AUDIT_KINDS = ("sign_in.", "session.", "user.", "robot.", "journal.", "portal.", "connection.", "api_key.")


def add_signin_pages(admin: Admin) -> None:
    page = admin.page
    users = admin.users

    @page("/admin", public=True)
    async def home(ctx: Ctx) -> Response:
        return ctx.redirect(HOME if ctx.user else "/admin/login")

    @page("/admin/", public=True)
    async def home_slash(ctx: Ctx) -> Response:
        return ctx.redirect(HOME if ctx.user else "/admin/login")

    @page("/admin/login", public=True)
    async def login_form(ctx: Ctx) -> Response:
        if ctx.user:
            return ctx.redirect(safe_next(ctx.query("next")))
        has_users = await run_in_threadpool(users.count)
        return ctx.render("login.html", next=safe_next(ctx.query("next")), error="", username="", has_users=has_users)

    @page("/admin/login", ("POST",), public=True)
    async def login(ctx: Ctx) -> Response:
        username, password = ctx.field("username").strip(), ctx.field("password")
        target = safe_next(ctx.field("next"))
        device = admin.codec.device(ctx.request.cookies.get(DEVICE_COOKIE), username)
        try:
            user = await run_in_threadpool(lambda: users.authenticate(username, password, ctx.address, device=device))
        except TooManyAttempts as exc:
            seconds = int(exc.retry_after) + 1
            msg = (
                ctx._("Too many failed sign-ins. Try again in %(seconds)d s.", seconds=seconds)
                if seconds < 120
                else ctx._("Too many failed sign-ins. Try again in %(minutes)d min.", minutes=seconds // 60 + 1)
            )
            refused = ctx.render("login.html", 429, next=target, error=msg, username=username, has_users=True)
            refused.headers["Retry-After"] = str(seconds)
            return refused
        except AdminAuthError:
            msg = ctx._("Wrong user name or password.")
            return ctx.render("login.html", 401, next=target, error=msg, username=username, has_users=True)
        token = await run_in_threadpool(users.start_session, user, ctx.address)
        ctx.session.login(token)
        log.info("admin %s signed in", user.username)
        response = ctx.redirect(target)
        if device is None:
            admin.codec.save_device(response, user.username)
        return response

    @page("/admin/login/link/{token}", public=True)
    async def login_link(ctx: Ctx) -> Response:
        try:
            user = await run_in_threadpool(lambda: users.redeem_link_token(ctx.param("token"), address=ctx.address))
        except AdminAuthError as exc:
            msg = ctx._("This login link is not valid any more (links work once, for 10 minutes).")
            log.info("login link refused: %s", exc)
            return ctx.render("login.html", 401, next=HOME, error=msg, username="", has_users=True)
        token = await run_in_threadpool(users.start_session, user, ctx.address)
        ctx.session.login(token)
        log.info("admin %s signed in with a one-time link", user.username)
        return ctx.redirect(HOME)

    @page("/admin/logout", ("POST",), public=True)
    async def logout(ctx: Ctx) -> Response:
        if ctx.session.token:
            await run_in_threadpool(lambda: users.end_session(ctx.session.token or "", address=ctx.address))
        ctx.session.logout()
        return ctx.redirect("/admin/login")

    @page("/admin/logout-everywhere", ("POST",))
    async def logout_everywhere(ctx: Ctx) -> Response:
        assert ctx.user is not None
        name = ctx.user.username
        await run_in_threadpool(lambda: users.end_all_sessions(name, actor=name, address=ctx.address))
        ctx.session.logout()
        return ctx.redirect("/admin/login")

    @page("/admin/lang/{lang}", public=True)
    async def set_language(ctx: Ctx) -> Response:
        lang = ctx.param("lang")
        response = RedirectResponse(safe_next(ctx.query("next")), status_code=303)
        if lang in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/admin", samesite="lax")
        return response

    @page("/admin/audit")
    async def audit(ctx: Ctx) -> Response:
        kind = ctx.query("kind") if ctx.query("kind") in AUDIT_KINDS else ""
        actor = ctx.query("actor")[:128]
        before = parse_id(ctx.query("before"))

        def load() -> dict[str, Any]:
            rows = admin.svc.audit.recent(limit=AUDIT_PAGE, before_id=before, action=kind or None, actor=actor or None)
            return {
                "rows": rows,
                "kinds": AUDIT_KINDS,
                "filters": {"kind": kind, "actor": actor},
                "older": rows[-1].id if len(rows) == AUDIT_PAGE else None,
                "query": urlencode({k: v for k, v in (("kind", kind), ("actor", actor)) if v}),
            }

        return ctx.render("audit.html", **await run_in_threadpool(load))
