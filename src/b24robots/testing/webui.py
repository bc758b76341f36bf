"""``/sim/``: a plain HTML page and a small JSON API to look at and drive the simulator by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from b24robots.errors import FormDecodeError, SimulatorError
from b24robots.inbound.formcodec import decode_form

from .clock import ManualClock

if TYPE_CHECKING:
    from .simulator import PortalSimulator

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _scopes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise ApiError(400, "scopes must be a list of strings or a comma-separated string")


def _int(data: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(400, f"{key} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"{key} must be an integer") from None


def build_ui(sim: PortalSimulator) -> Starlette:
    """The Starlette app for ``/sim/...`` (and a JSON 404 for anything else)."""

    def api(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                result = await handler(request)
            except ApiError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            except SimulatorError as exc:
                return JSONResponse({"error": str(exc)}, status_code=404 if str(exc).startswith("no ") else 400)
            return JSONResponse(result)

        return endpoint

    async def state(request: Request) -> Any:
        return sim.snapshot()

    async def portals(request: Request) -> Any:
        if request.method == "POST":
            data = await _json_body(request)
            burst = _int(data, "burst")
            rate = data.get("rate")
            if rate is not None and not isinstance(rate, int | float):
                raise ApiError(400, "rate must be a number")
            portal = sim.add_portal(data.get("domain"), rate=rate, burst=burst)
            return portal.as_json()
        return [p.as_json() for p in sim.portals.values()]

    async def apps(request: Request) -> Any:
        if request.method == "POST":
            data = await _json_body(request)
            app = sim.register_app(
                str(data.get("name", "Application")),
                install_url=data.get("install_url"),
                scopes=_scopes(data.get("scopes")) or ("crm", "bizproc", "user_brief", "placement"),
                api_only=bool(data.get("api_only", True)),
                client_id=data.get("client_id"),
                client_secret=data.get("client_secret"),
            )
            # The one place the secret is given out: the developer must configure it in the app.
            return app.as_json() | {"client_secret": app.client_secret}
        return [a.as_json() for a in sim.apps.values()]

    async def app_action(request: Request) -> Any:
        client_id, action = request.path_params["client_id"], request.path_params["action"]
        data = await _json_body(request)
        portal = data.get("portal")
        if action == "install":
            inst = await sim.install_app(client_id, portal, notify=bool(data.get("notify", True)))
        elif action == "update":
            inst = await sim.update_app(client_id, portal, version=_int(data, "version"))
        elif action == "uninstall":
            inst = await sim.uninstall_app(client_id, portal, clean=bool(data.get("clean", False)))
        else:
            raise ApiError(404, f"unknown action {action!r}; use install, update or uninstall")
        return inst.as_json()

    async def robots(request: Request) -> Any:
        portal = request.query_params.get("portal")
        chosen = [sim.portal(portal)] if portal else list(sim.portals.values())
        return [r.as_json() | {"domain": p.domain} for p in chosen for r in p.registrations.values()]

    async def workflows(request: Request) -> Any:
        if request.method == "POST":
            data = await _json_body(request)
            code = data.get("code")
            if not isinstance(code, str) or not code:
                raise ApiError(400, "code is required: the CODE of a registered robot")
            properties = data.get("properties") or {}
            if not isinstance(properties, dict):
                raise ApiError(400, "properties must be an object")
            document_id = data.get("document_id") or ["crm", "CCrmDocumentDeal", "DEAL_1"]
            if isinstance(document_id, str):
                document_id = ["crm", "CCrmDocumentDeal", document_id]
            wf = await sim.start_robot(
                data.get("portal"),
                code,
                document_id=document_id,
                properties=properties,
                user_id=_int(data, "user_id"),
                timeout_duration=_int(data, "timeout_duration", 0) or 0,
                client_id=data.get("client_id"),
            )
            return wf.as_json()
        portal = request.query_params.get("portal")
        return [wf.as_json() for wf in sim.workflows(portal)]

    async def workflow(request: Request) -> Any:
        return sim.workflow(request.path_params["workflow_id"]).as_json()

    async def faults(request: Request) -> Any:
        if request.method == "DELETE":
            sim.faults.clear()
        elif request.method == "POST":
            data = await _json_body(request)
            kind = data.get("kind")
            portal, method = data.get("portal"), data.get("method")
            count = _int(data, "count", 1)
            seconds = data.get("seconds", 0)
            if not isinstance(seconds, int | float):
                raise ApiError(400, "seconds must be a number")
            if kind == "delay":
                sim.faults.delay(float(seconds), count=_int(data, "count"), portal=portal, method=method)
            elif kind == "fail":
                sim.faults.fail_next(
                    count or 1,
                    status=_int(data, "status", 500) or 500,
                    error=str(data.get("error", "INTERNAL_SERVER_ERROR")),
                    description=str(data.get("description", "Internal server error")),
                    portal=portal,
                    method=method,
                )
            elif kind == "drop":
                sim.faults.drop_next(count or 1, portal=portal, method=method)
            elif kind == "fail_deliveries":
                sim.faults.fail_deliveries(count or 1, portal=portal)
            elif kind == "delay_deliveries":
                sim.faults.delay_deliveries(float(seconds))
            elif kind == "fill_bucket":
                sim.fill_bucket(portal)
            elif kind == "expire_tokens":
                return {"expired": sim.expire_tokens(portal)}
            else:
                raise ApiError(
                    400,
                    "kind must be one of delay, fail, drop, fail_deliveries, delay_deliveries, "
                    "fill_bucket, expire_tokens",
                )
        return sim.faults.as_json()

    async def webhooks(request: Request) -> Any:
        data = await _json_body(request)
        portal = sim.portal(data.get("portal"))
        hook = sim.add_webhook(portal, user_id=_int(data, "user_id", 1) or 1, scopes=_scopes(data.get("scopes")) or ())
        return {"id": hook.id, "user_id": hook.user_id, "url": sim.webhook_url(hook, portal)}

    async def clock(request: Request) -> Any:
        if not isinstance(sim.clock, ManualClock):
            raise ApiError(409, "the simulator runs on the system clock; start it with a ManualClock to move time")
        data = await _json_body(request)
        seconds = data.get("seconds")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ApiError(400, "seconds must be a non-negative number")
        sim.clock.advance(float(seconds))
        return {"now": sim.now()}

    async def calls(request: Request) -> Any:
        limit = int(request.query_params.get("limit", "100") or 100)
        return [vars(c) for c in list(sim.calls)[-limit:]]

    async def page(request: Request) -> Response:
        snapshot = sim.snapshot()
        html = _TEMPLATES.get_template("index.html").render(
            sim=snapshot,
            calls=[vars(c) for c in list(sim.calls)[-30:]][::-1],
            message=request.query_params.get("message", ""),
            error=request.query_params.get("error", ""),
        )
        return HTMLResponse(html)

    async def start_from_form(request: Request) -> Response:
        try:
            form = decode_form(await request.body())
            target = str(form.get("robot", ""))
            domain, _, code = target.partition("|")
            raw_props = str(form.get("properties", "") or "{}")
            properties = json.loads(raw_props)
            if not isinstance(properties, dict):
                raise ValueError("properties must be a JSON object")
            document = str(form.get("document_id") or "DEAL_1")
            user = str(form.get("user_id") or "").strip()
            wf = await sim.start_robot(
                domain or None,
                code,
                document_id=["crm", "CCrmDocumentDeal", document],
                properties=properties,
                user_id=int(user) if user else None,
                timeout_duration=int(str(form.get("timeout_duration") or "0")),
            )
        except (FormDecodeError, SimulatorError, ValueError) as exc:
            return RedirectResponse(f"/sim/?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"/sim/?message={quote('started workflow ' + wf.id)}#wf-{wf.id}", status_code=303)

    async def not_found(request: Request) -> Response:
        return JSONResponse(
            {
                "error": "NOT_FOUND",
                "error_description": f"nothing at {request.url.path}; try /sim/ or /rest/<method>",
            },
            status_code=404,
        )

    routes = [
        Route("/sim", lambda r: RedirectResponse("/sim/")),
        Route("/sim/", page),
        Route("/sim/start", start_from_form, methods=["POST"]),
        Route("/sim/api/state", api(state)),
        Route("/sim/api/portals", api(portals), methods=["GET", "POST"]),
        Route("/sim/api/apps", api(apps), methods=["GET", "POST"]),
        Route("/sim/api/apps/{client_id}/{action}", api(app_action), methods=["POST"]),
        Route("/sim/api/robots", api(robots)),
        Route("/sim/api/workflows", api(workflows), methods=["GET", "POST"]),
        Route("/sim/api/workflows/{workflow_id}", api(workflow)),
        Route("/sim/api/faults", api(faults), methods=["GET", "POST", "DELETE"]),
        Route("/sim/api/webhooks", api(webhooks), methods=["POST"]),
        Route("/sim/api/clock/advance", api(clock), methods=["POST"]),
        Route("/sim/api/calls", api(calls)),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    return Starlette(routes=routes)
