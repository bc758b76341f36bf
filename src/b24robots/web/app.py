"""The FastAPI application: the robot handler, install and event endpoints, health and metrics."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from b24robots.config import Settings, load_settings
from b24robots.errors import FormDecodeError, StoreRefused, StoreUnavailable
from b24robots.fields import as_int
from b24robots.inbound.formcodec import DEFAULT_LIMITS, decode_form
from b24robots.jobs.outbound import OutboundError
from b24robots.portal.install import Outcome
from b24robots.portal.robot_call import Intake
from b24robots.robots.router import Router
from b24robots.web.admin import STATIC_DIR as ADMIN_STATIC_DIR
from b24robots.web.admin import STATIC_URL as ADMIN_STATIC_URL
from b24robots.web.admin import build_admin
from b24robots.web.api import ApiProblem, build_api_router, problem_response
from b24robots.web.robot_endpoint import RobotCall, RobotCallFastPath, over_limit, too_long
from b24robots.web.services import Services, build_services

log = logging.getLogger("b24robots.web")


def _error(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


async def _read_form(request: Request) -> dict[str, Any]:
    """Read and decode a form body within the codec's size limit; FormDecodeError on any problem."""
    length = as_int(request.headers.get("content-length"), maximum=None)
    if length is not None and length > DEFAULT_LIMITS.max_body_bytes:
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


def _outcome(outcome: Outcome) -> Response:
    if outcome.page is not None:
        return HTMLResponse(outcome.page, status_code=outcome.status)
    return JSONResponse(outcome.body or {}, status_code=outcome.status)


def bearer_ok(request: Request, secret: SecretStr) -> bool:
    """The request carries `Authorization: Bearer <secret>` (constant-time; never true for an empty secret)."""
    expected = secret.get_secret_value()
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


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

    robot = RobotCall(intake, svc.metrics)

    @app.post("/b24/robot", summary="The handler URL of every robot (Bitrix24 posts robot calls here)")
    async def robot_call(request: Request) -> Response:
        # served by RobotCallFastPath before routing (web/robot_endpoint.py); the route documents the
        # endpoint and answers the same way should a request reach it
        started = time.perf_counter()
        body: bytes | FormDecodeError | None = too_long(request.headers.get("content-length", ""))
        if body is None:
            body = await request.body()
            if len(body) > DEFAULT_LIMITS.max_body_bytes:
                body = over_limit()
        status, answer = await robot.answer(body, request.headers.get("content-type", ""), started)
        return JSONResponse(answer, status_code=status)

    @app.post("/b24/install", summary="The install URL: a UI app's frame POST (and openings), or ONAPPINSTALL")
    async def install(request: Request) -> Response:
        try:
            fields = await _read_form(request)
        except FormDecodeError as exc:
            return _error(400, "bad_request", exc.reason)
        for key, value in request.query_params.items():  # DOMAIN, PROTOCOL, LANG, APP_SID of a frame POST
            fields.setdefault(key, value)
        return _outcome(await svc.lifecycle.install_post(fields))

    @app.post("/b24/events", summary="ONAPPINSTALL, ONAPPUPDATE and ONAPPUNINSTALL (bound with event.bind)")
    async def events(request: Request) -> Response:
        try:
            form = await _read_form(request)
        except FormDecodeError as exc:
            return _error(400, "bad_request", exc.reason)
        return _outcome(await svc.lifecycle.event(form))

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

    @app.exception_handler(StoreRefused)
    async def store_refused(_request: Request, exc: StoreRefused) -> Response:
        # the request's data, not the database: the same request fails again, so it is the caller's to fix
        log.warning("the database refused a request's data: %s", exc.reason)
        return _error(400, "bad_request", f"the database cannot hold this data ({exc.reason})")

    @app.exception_handler(ApiProblem)
    async def api_problem(_request: Request, exc: ApiProblem) -> Response:
        return problem_response(exc)

    @app.exception_handler(OutboundError)
    async def outbound_refused(_request: Request, exc: OutboundError) -> Response:
        return problem_response(exc)

    app.include_router(admin_ui.router)
    app.mount(ADMIN_STATIC_URL, StaticFiles(directory=ADMIN_STATIC_DIR), name="admin-static")
    app.add_middleware(RobotCallFastPath, call=robot)
    return app
