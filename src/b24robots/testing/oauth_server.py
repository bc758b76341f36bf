"""The simulated Bitrix24 OAuth server (oauth.bitrix.info): tokens and the OAuth ``app.info``.

Its ``/rest/app.info?auth=<token>`` is the one check an application can trust: it answers ``client_id,
scope, expires, user_id, install{installed, version, status, scope, domain, uri, client_endpoint, member_id,
member_type}`` (official Python SDK ``b24pysdk/api/responses/bitrix_app_info_response.py``). A portal's own
app.info has no ``client_id`` (rest module ``classes/general/rest_provider.php::appInfo``); see restapi.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from b24robots.errors import FormDecodeError

from ._util import iso_c

if TYPE_CHECKING:
    from .simulator import PortalSimulator

OAUTH_HOSTS = ("oauth.bitrix.info", "oauth.bitrix24.tech")


def oauth_app_info(sim: PortalSimulator, token: str) -> tuple[int, dict[str, Any]]:
    """The OAuth server's answer for an access token."""
    with sim._lock:
        if not token:
            return 401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
        record = sim.access_tokens.get(token)
        if record is None:
            return 401, {"error": "invalid_token", "error_description": "Unable to get application by token"}
        inst = record.installation
        if not inst.active:
            return 401, {"error": "APPLICATION_NOT_FOUND", "error_description": "Application not found"}
        if record.expires_at <= sim.now():
            # b24pysdk credentials/bitrix_token.py::get_app_info refreshes on this answer and retries
            return 401, {"error": "expired_token", "error_description": "The access token provided has expired"}
        portal, app = sim.portals[record.domain], inst.app
        return 200, {
            "result": {
                "client_id": app.client_id,
                "scope": app.scope,
                "expires": iso_c(record.expires_at),
                "user_id": record.user_id,
                "install": {
                    "installed": inst.installed,
                    "version": inst.version,
                    "status": "L",
                    "scope": app.scope,
                    "domain": portal.domain,
                    "uri": f"https://{portal.domain}",
                    "client_endpoint": sim.client_endpoint(portal),
                    "member_id": portal.member_id,
                    "member_type": "PORTAL",
                },
            }
        }


async def oauth_server(sim: PortalSimulator, path: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve ``/oauth/token/`` and ``/rest/app.info`` of the OAuth server (``path`` without any prefix)."""
    from .asgi import BitrixJSONResponse, error_response, oauth_endpoint, read_params

    if path in ("/oauth/token", "/oauth/token/"):
        await oauth_endpoint(sim, scope, receive, send)
        return
    if path.rstrip("/").lower() in ("/rest/app.info", "/rest/app.info.json"):
        try:
            params = await read_params(Request(scope, receive))
        except FormDecodeError as exc:
            await error_response(400, "invalid_request", exc.reason)(scope, receive, send)
            return
        token = params.get("auth")
        started = sim.now()
        status, body = oauth_app_info(sim, token if isinstance(token, str) else "")
        if status == 200:
            from .restapi import time_block

            body["time"] = time_block(started, sim.now(), 0.0)
        await BitrixJSONResponse(body, status_code=status)(scope, receive, send)
        return
    await error_response(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")(scope, receive, send)


def host_of(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return str(value.decode("latin-1").split(":", 1)[0].lower())
    return ""
