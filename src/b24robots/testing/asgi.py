"""The HTTP face of the simulator: ``/rest/...``, ``/oauth/token/`` and (via :mod:`.webui`) ``/sim/...``."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from b24robots.errors import FormDecodeError, OperationTimeLimit, RestError
from b24robots.inbound.formcodec import decode_form

from .model import CallRecord
from .restapi import Caller, operating_info, run_method, time_block

if TYPE_CHECKING:
    from .simulator import PortalSimulator

_WEBHOOK_PATH = re.compile(r"^(\d+)/([^/]+)/([^/]+?)(?:\.json)?/?$")
_METHOD_PATH = re.compile(r"^([^/]+?)(?:\.json)?/?$")


class BitrixJSONResponse(JSONResponse):
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_response(status: int, code: str, description: str, extra: dict[str, Any] | None = None) -> Response:
    """Bitrix error envelope: exactly ``{"error", "error_description"}`` (+ extra keys when given)."""
    return BitrixJSONResponse({"error": code, "error_description": description, **(extra or {})}, status_code=status)


async def read_params(request: Request) -> dict[str, Any]:
    """Query string merged with a JSON or form body (body wins), like PHP's ``$_REQUEST``."""
    params: dict[str, Any] = {}
    query = request.scope.get("query_string", b"")
    if query:
        params.update(decode_form(query))
    body = await request.body()
    if body.strip():
        content_type = request.headers.get("content-type", "").lower()
        looks_json = body.lstrip()[:1] in (b"{", b"[")
        if "json" in content_type or (not content_type and looks_json):
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise FormDecodeError(f"the JSON body is not valid: {exc}") from None
            if not isinstance(data, dict):
                raise FormDecodeError("the JSON body must be an object")
            params.update(data)
        else:
            params.update(decode_form(body))
    return params


def _take_token(params: dict[str, Any], request: Request) -> str | None:
    for candidate in (params.pop("auth", None), params.pop("access_token", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


async def _drop(send: Send) -> None:
    # Start an answer and die mid-way: a real server closes the socket, httpx.ASGITransport
    # surfaces the same httpx transport error a client would see.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
    raise httpx.RemoteProtocolError("connection closed by the portal simulator (fault injection)")


async def rest_endpoint(sim: PortalSimulator, scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    started, perf = sim.now(), time.perf_counter()
    path = scope["path"][len("/rest/") :]
    webhook: tuple[str, str] | None = None
    hook = _WEBHOOK_PATH.match(path)
    plain = _METHOD_PATH.match(path)
    if hook:
        webhook, method = (hook.group(1), hook.group(2)), hook.group(3)
    elif plain:
        method = plain.group(1)
    else:
        await error_response(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")(scope, receive, send)
        return
    method = method.lower()
    try:
        params = await read_params(request)
    except FormDecodeError as exc:
        await error_response(400, "INVALID_REQUEST", exc.reason)(scope, receive, send)
        return
    token = _take_token(params, request)
    domain = sim.peek_domain(token, webhook)
    auth_kind = "webhook" if webhook else ("app" if token else "none")
    known = sim.access_tokens.get(token) if token and not webhook else None
    user_id = known.user_id if known else None

    def record(status: int, error: str | None, client_id: str | None = None) -> None:
        sim.record_call(CallRecord(sim.now(), domain, method, auth_kind, client_id, status, error, user_id))

    decision = sim.faults.take(domain, method)
    if decision.delay > 0:
        await asyncio.sleep(decision.delay)
    if decision.drop:
        record(0, "dropped")
        await _drop(send)
        return
    if decision.fail is not None:
        rule = decision.fail
        record(rule.status, rule.error)
        await error_response(rule.status, rule.error, rule.description)(scope, receive, send)
        return

    caller: Caller | None = None
    try:
        caller = sim.authenticate(token, webhook)
        sim.admit(caller)
        with sim._lock:
            outcome = run_method(sim, caller, method, params, extra_seconds=decision.delay)
    except RestError as exc:
        status = exc.status or 400
        record(status, exc.code, caller.client_id if caller else None)
        extra: dict[str, Any] = {}
        if isinstance(exc, OperationTimeLimit) and caller is not None:
            # Tells the client when the method unblocks (time.operating_reset_at).
            extra["time"] = time_block(started, sim.now(), time.perf_counter() - perf) | operating_info(
                sim, caller, method
            )
        await error_response(status, exc.code, exc.description, extra)(scope, receive, send)
        return

    body: dict[str, Any] = {"result": outcome.result}
    if outcome.next is not None:
        body["next"] = outcome.next
    if outcome.total is not None:
        body["total"] = outcome.total
    body["time"] = time_block(started, sim.now(), time.perf_counter() - perf) | operating_info(sim, caller, method)
    record(200, None, caller.client_id)
    await BitrixJSONResponse(body)(scope, receive, send)
    # Work the portal does after answering (bizproc.event.send is applied by a background job).
    loop = asyncio.get_running_loop()
    for action in outcome.after:
        loop.call_later(sim.event_apply_delay, action)


async def oauth_endpoint(sim: PortalSimulator, scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    try:
        params = await read_params(request)
    except FormDecodeError as exc:
        await error_response(400, "invalid_request", exc.reason)(scope, receive, send)
        return
    status, body = sim.oauth_token(params)
    sim.oauth_requests.append((str(params.get("grant_type", "")), status))
    if status == 200 and sim.faults.oauth_delay > 0:
        await asyncio.sleep(sim.faults.oauth_delay)
    await BitrixJSONResponse(body, status_code=status)(scope, receive, send)


def build_app(sim: PortalSimulator) -> ASGIApp:
    """The simulator's ASGI application."""
    from .oauth_server import OAUTH_HOSTS, host_of, oauth_server
    from .simulator import OAUTH_PREFIX
    from .webui import build_ui

    ui = build_ui(sim)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            # the OAuth server: by its own host name (per-domain endpoints behind a proxy) or under a prefix
            if host_of(scope) in OAUTH_HOSTS:
                await oauth_server(sim, path, scope, receive, send)
                return
            if path.startswith(f"{OAUTH_PREFIX}/"):
                await oauth_server(sim, path[len(OAUTH_PREFIX) :], scope, receive, send)
                return
            if path.startswith("/rest/"):
                await rest_endpoint(sim, scope, receive, send)
                return
            if path in ("/oauth/token", "/oauth/token/"):
                await oauth_endpoint(sim, scope, receive, send)
                return
        await ui(scope, receive, send)

    return app
