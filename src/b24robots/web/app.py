"""The FastAPI application: the robot handler, install and event endpoints, health and metrics."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from b24robots.config import Settings, load_settings
from b24robots.errors import FormDecodeError, InputError, StoreError, StoreUnavailable
from b24robots.inbound.formcodec import DEFAULT_LIMITS, decode_form
from b24robots.jobs.outbound import OutboundError
from b24robots.jobs.runner import jsonable, short
from b24robots.robots.params import default_outputs, parse_values
from b24robots.robots.router import Router
from b24robots.store.installations import InstallGrant, grant_from_fields
from b24robots.store.journal import NewInvocation
from b24robots.web.admin import STATIC_DIR as ADMIN_STATIC_DIR
from b24robots.web.admin import STATIC_URL as ADMIN_STATIC_URL
from b24robots.web.admin import build_admin
from b24robots.web.api import ApiProblem, build_api_router, problem_response
from b24robots.web.services import Services, build_services

log = logging.getLogger("b24robots.web")

OAUTH_HOSTS = {"oauth.bitrix.info", "oauth.bitrix24.tech"}


def _error(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


async def _read_form(request: Request) -> dict[str, Any]:
    """Read and decode a form body within the codec's size limit; FormDecodeError on any problem."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > DEFAULT_LIMITS.max_body_bytes:
        raise FormDecodeError(f"body is {length} bytes; the limit is {DEFAULT_LIMITS.max_body_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DEFAULT_LIMITS.max_body_bytes:
            raise FormDecodeError(f"body is over the limit of {DEFAULT_LIMITS.max_body_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-type", "").startswith("application/json"):
        raise FormDecodeError("expected an application/x-www-form-urlencoded body, got JSON")
    return decode_form(body)


def _text(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key, "")
    return value if isinstance(value, str) else ""


def _triple(value: Any) -> list[str]:
    if isinstance(value, list):
        return [v if isinstance(v, str) else "" for v in value]
    if isinstance(value, Mapping):
        return [v if isinstance(v, str) else "" for _, v in sorted(value.items())]
    return []


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


class Intake:
    """`POST /b24/robot`: verify, parse, store durably, answer. Runs in a worker thread."""

    def __init__(self, services: Services) -> None:
        self.s = services

    def accept(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        auth = form.get("auth")
        if not isinstance(auth, Mapping):
            return 401, {"error": "unauthorized", "reason": "the request has no auth block"}
        member_id, app_token = str(auth.get("member_id") or ""), str(auth.get("application_token") or "")
        if not member_id or not app_token:
            return 401, {
                "error": "unauthorized",
                "reason": "auth[member_id] and auth[application_token] are required",
            }
        inst, verdict = self.s.installations.verify(member_id, app_token)
        if inst is None:
            if verdict == "unknown":
                return 401, {
                    "error": "unauthorized",
                    "reason": "unknown portal: install the application first",
                }
            return 403, {"error": "forbidden", "reason": "the application token does not match this portal"}
        if not inst.active:
            return 403, {"error": "forbidden", "reason": f"the installation is {inst.status}"}
        if str(auth.get("domain") or "") != inst.domain:
            return 403, {"error": "forbidden", "reason": "auth[domain] does not match the installation"}
        code, token = _text(form, "code"), _text(form, "event_token")
        if not code or not token:
            return 400, {"error": "bad_request", "reason": "code and event_token are required"}
        properties = form.get("properties")
        if properties is None or properties == "":
            properties = {}
        if not isinstance(properties, Mapping):
            return 400, {
                "error": "bad_request",
                "reason": "properties must be a bracketed map (properties[key]=...)",
            }
        resolved = self.s.registry.resolve(code)
        new = NewInvocation(
            event_token=token,
            installation_id=inst.id,
            robot_code=code,
            origin=resolved.origin if resolved else "unknown",
            robot_version_id=resolved.version_id if resolved else None,
            workflow_id=_text(form, "workflow_id"),
            document_id=_triple(form.get("document_id")),
            document_type=_triple(form.get("document_type")),
            use_subscription=_text(form, "use_subscription").upper() != "N",
            timeout_duration=_int(form.get("timeout_duration")),
            portal_ts=_int(form.get("ts")),
            auth_user_id=_int(auth.get("user_id"), 0) or None,
            properties=dict(properties),
            inputs=None,
        )
        if resolved is None:
            inv_id, created = self.s.journal.enqueue_dead(
                new,
                error=f"no robot with code {code!r} on this server",
                log_message=f"b24robots: robot {code} is not available on the server",
                outputs={},
            )
            return 200, {"status": "rejected" if created else "duplicate", "id": inv_id}
        try:
            values = parse_values(resolved.spec.inputs, properties, culture=inst.date_culture)
        except InputError as exc:
            inv_id, created = self.s.journal.enqueue_dead(
                new,
                error=f"bad input: {exc}",
                log_message=short(f"b24robots: bad input: {exc}"),
                outputs=default_outputs(resolved.spec.outputs),
            )
            if created:
                self.s.deliver_wakeup.notify()
            return 200, {"status": "rejected" if created else "duplicate", "id": inv_id, "reason": str(exc)}
        new = NewInvocation(**{**new.__dict__, "inputs": jsonable(values)})
        inv_id, created = self.s.journal.enqueue(new)
        if created:
            self.s.work_wakeup.notify()
        return 200, {"status": "queued" if created else "duplicate", "id": inv_id}


def bearer_ok(request: Request, secret: SecretStr) -> bool:
    """The request carries `Authorization: Bearer <secret>` (constant-time; never true for an empty secret)."""
    expected = secret.get_secret_value()
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def _check_grant(grant: InstallGrant, settings: Settings) -> str:
    """Refuse endpoints we must never call: only the portal's own host and the Bitrix OAuth hosts."""
    allowed = ("http", "https") if settings.allow_http_portals else ("https",)
    client = urlsplit(grant.client_endpoint)
    if client.scheme not in allowed:
        return "client_endpoint must be https (set B24R_ALLOW_HTTP_PORTALS=true only for local simulators)"
    if not settings.allow_http_portals and client.hostname != grant.domain:
        return "client_endpoint is not on the portal's domain"
    server = urlsplit(grant.server_endpoint)
    if server.scheme not in allowed:
        return "server_endpoint must be https"
    if not settings.allow_http_portals and server.hostname not in OAUTH_HOSTS:
        return f"server_endpoint must be one of the Bitrix24 OAuth servers ({', '.join(sorted(OAUTH_HOSTS))})"
    return ""


INSTALL_FINISH = """<!doctype html><html><head><meta charset="utf-8"><title>b24robots</title>
<script src="//api.bitrix24.com/api/v1/"></script></head><body>
<p>b24robots is installed. Robots are being registered.</p>
<script>if (window.BX24) { BX24.init(function () { BX24.installFinish(); }); }</script>
</body></html>"""


def create_app(
    settings: Settings | None = None,
    router: Router | None = None,
    *,
    services: Services | None = None,
    run_workers: bool = True,
    run_sandbox: bool = True,
) -> FastAPI:
    """Build the ASGI app. Workers and the sender run inside it unless `run_workers` is False."""
    if services is None:
        services = build_services(settings or load_settings(), router)
    svc = services
    intake = Intake(svc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start(workers=run_workers, sandbox=run_sandbox)
        try:
            yield
        finally:
            await svc.stop()

    # Swagger UI and ReDoc from assets shipped in fastapi-offline: /docs works without internet.
    # B24R_API_DOCS=false serves neither them nor /openapi.json.
    app = (
        FastAPIOffline(title="b24robots", version="0.1.0", lifespan=lifespan)
        if svc.settings.api_docs
        else FastAPI(
            title="b24robots", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
        )
    )
    app.state.services = svc
    admin_ui = build_admin(svc)

    async def client_gone(request: Request, exc: Exception) -> Response:
        # the client closed the connection mid-body, or the server cut it off at the body deadline
        # (web/server.py): nobody reads an answer, and it is no error of ours worth a traceback
        return Response(status_code=400)

    app.add_exception_handler(ClientDisconnect, client_gone)

    @app.post("/b24/robot", summary="The handler URL of every robot (Bitrix24 posts robot calls here)")
    async def robot_call(request: Request) -> Response:
        started = time.perf_counter()
        try:
            form = await _read_form(request)
        except FormDecodeError as exc:
            svc.metrics.observe_ack(time.perf_counter() - started, "bad_request")
            return _error(400, "bad_request", exc.reason)
        try:
            status, body = await run_in_threadpool(intake.accept, form)
        except StoreError as exc:
            log.error("could not store a robot call: %s", exc)
            reason = exc.reason if isinstance(exc, StoreUnavailable) else str(exc)
            svc.metrics.observe_ack(time.perf_counter() - started, "unavailable")
            return _error(
                503,
                "unavailable",
                f"the journal cannot be written right now ({reason}); nothing was stored and the portal does not"
                " retry: the robot waits until its timeout",
            )
        svc.metrics.observe_ack(time.perf_counter() - started, str(body.get("status", body.get("error"))))
        return JSONResponse(body, status_code=status)

    async def _install(fields: dict[str, Any]) -> tuple[int, str, InstallGrant | None]:
        try:
            grant = grant_from_fields(fields)
        except InputError as exc:
            return 400, exc.reason, None
        problem = _check_grant(grant, svc.settings)
        if problem:
            return 400, problem, None
        # trust the grant only after the portal confirms the token belongs to our application
        try:
            # the token travels in the body, never in a URL that proxies might log
            resp = await svc.http.post(
                f"{grant.client_endpoint.rstrip('/')}/app.info", json={"auth": grant.access_token}
            )
            info = resp.json().get("result") if resp.status_code == 200 else None
        except Exception as exc:  # the portal is unreachable or answered garbage
            return 502, f"could not confirm the installation with the portal ({type(exc).__name__})", None
        if not isinstance(info, Mapping):
            return 403, "the portal did not confirm the access token", None
        client_id = str(info.get("client_id") or info.get("CLIENT_ID") or "")
        if svc.settings.client_id and client_id and client_id != svc.settings.client_id:
            return 403, "the token belongs to another application", None
        inst = await run_in_threadpool(svc.installations.install, grant)
        # the app.info check above was one request against the portal's bucket: account for it
        await run_in_threadpool(svc.installations.reserve, inst.member_id, time.time(), inst.rate, inst.burst)
        await run_in_threadpool(svc.installations.clear_registrations, inst.member_id)
        svc.sync_soon(inst.member_id)
        return 200, "installed", grant

    @app.post("/b24/install", summary="Install page POST and ONAPPINSTALL event")
    async def install(request: Request) -> Response:
        try:
            fields = await _read_form(request)
        except FormDecodeError as exc:
            return _error(400, "bad_request", exc.reason)
        for key, value in request.query_params.items():
            fields.setdefault(key, value)
        status, reason, _ = await _install(fields)
        if status != 200:
            return _error(status, "install_refused", reason)
        if str(fields.get("event", "")).upper() == "ONAPPINSTALL":
            return JSONResponse({"status": "installed"})
        return HTMLResponse(INSTALL_FINISH)

    @app.post("/b24/events", summary="ONAPPUPDATE and ONAPPUNINSTALL")
    async def events(request: Request) -> Response:
        try:
            form = await _read_form(request)
        except FormDecodeError as exc:
            return _error(400, "bad_request", exc.reason)
        event = _text(form, "event").upper()
        auth = form.get("auth")
        if not isinstance(auth, Mapping):
            return _error(401, "unauthorized", "the event has no auth block")
        member_id = str(auth.get("member_id") or "")
        inst, verdict = await run_in_threadpool(
            svc.installations.verify, member_id, str(auth.get("application_token") or "")
        )
        if inst is None:
            status = 401 if verdict == "unknown" else 403
            return _error(status, "unauthorized", "unknown portal or wrong application token")
        if event == "ONAPPUNINSTALL":
            await run_in_threadpool(svc.installations.uninstall, member_id)
            await run_in_threadpool(
                svc.journal.abandon_portal, inst.id, "not run or not answered: the application was uninstalled"
            )
            log.info("portal %s uninstalled the application", inst.domain)
            return JSONResponse({"status": "uninstalled"})
        if event in ("ONAPPUPDATE", "ONAPPINSTALL"):
            status, reason, _ = await _install(form)
            if status != 200:
                return _error(status, "update_refused", reason)
            return JSONResponse({"status": "updated"})
        return _error(400, "bad_request", f"event {event or '(none)'} is not handled here")

    @app.get("/healthz", summary="ok or not ok; the checks with the health token or for a signed-in admin")
    @app.get("/admin/health", include_in_schema=False)
    async def healthz(request: Request) -> Response:
        db_ok, db_reason = await run_in_threadpool(svc.db.health)
        checks: dict[str, Any] = {"database": db_ok}
        if run_workers:
            checks["worker"] = bool(svc.worker and svc.worker.alive)
            checks["sender"] = bool(svc.sender and svc.sender.alive)
        if svc.sandbox is not None:
            checks["sandbox"] = svc.sandbox.health()
        ok = all(v for k, v in checks.items() if k != "sandbox")
        body: dict[str, Any] = {"status": "ok" if ok else "degraded"}
        # what runs where (the sandbox's isolation, the loops) is for operators only; the admin
        # cookie is scoped to /admin, so signed-in admins read the details at /admin/health
        if bearer_ok(request, svc.settings.health_token) or await admin_ui.signed_in(request) is not None:
            body["checks"] = checks
            if not db_ok:
                body["database_error"] = db_reason
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics (needs the bearer token B24R_METRICS_TOKEN)")
    async def metrics(request: Request) -> Response:
        if not svc.settings.metrics_token.get_secret_value():
            return _error(404, "not_found", "metrics are off; set B24R_METRICS_TOKEN and send it as a bearer token")
        if not bearer_ok(request, svc.settings.metrics_token):
            response = _error(401, "unauthorized", "send Authorization: Bearer <B24R_METRICS_TOKEN>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        body = await run_in_threadpool(svc.metrics.render)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    app.include_router(build_api_router(svc))

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_request: Request, exc: StoreUnavailable) -> Response:
        # a full disk or a read-only database is not a bug of the request: 503, and it passes by itself
        log.error("database unavailable: %s", exc.reason)
        return _error(503, "unavailable", f"the database cannot be used right now ({exc.reason}); try again later")

    @app.exception_handler(ApiProblem)
    async def api_problem(_request: Request, exc: ApiProblem) -> Response:
        return problem_response(exc)

    @app.exception_handler(OutboundError)
    async def outbound_refused(_request: Request, exc: OutboundError) -> Response:
        return problem_response(exc)

    app.include_router(admin_ui.router)
    app.mount(ADMIN_STATIC_URL, StaticFiles(directory=ADMIN_STATIC_DIR), name="admin-static")
    return app
