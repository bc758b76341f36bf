"""Trust in a portal comes from a Bitrix24 OAuth server, never from an address in the request.

A claim (b24robots.portal.grant) is accepted only after one of the configured OAuth servers
(`B24R_OAUTH_SERVERS`) confirms its access token: `<server>/rest/app.info?auth=<token>` answers
`client_id, scope, expires, user_id, install{installed, version, status, scope, domain, uri,
client_endpoint, member_id, member_type}` (official Python SDK `b24pysdk/api/responses/
bitrix_app_info_response.py`; bitrix24-protocol.md §9.1). A portal's own `app.info` has no `client_id`
(rest module `classes/general/rest_provider.php::appInfo`), so it proves nothing and is never asked.

An expired access token (a late ONAPPINSTALL is normal: events are never resent, docs
`settings/oauth/simple-way.md`) is first refreshed at the same OAuth server with the claim's refresh
token and our client secret — the refresh itself proves the tokens are our application's. The client
secret is only ever sent to a configured OAuth server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from b24robots.fields import as_int, split_url
from b24robots.portal.grant import Claim, normal_host

log = logging.getLogger("b24robots.portal")

# Portals of these zones are served by oauth.bitrix24.tech, the rest by oauth.bitrix.info
# (main module lib/license/.../AuthorizationServerUrlResolver.php); we ask the likely one first.
_TECH_ZONES = ("ru", "am", "az", "ge", "kz", "kg", "uz", "by")


class Refused(Exception):
    """The claim is not confirmed; `status` and `reason` are what the portal (or attacker) is told."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Confirmed:
    """What the OAuth server vouches for, plus the (possibly refreshed) tokens."""

    server: str  # base URL of the OAuth server that confirmed, e.g. https://oauth.bitrix.info
    member_id: str
    domain: str
    client_endpoint: str
    access_token: str
    refresh_token: str
    expires_at: float
    user_id: int | None
    scopes: str
    installed: bool  # the portal considers the install finished (a frame POST then is an app opening)
    refreshed: bool

    @property
    def server_endpoint(self) -> str:
        return f"{self.server}/rest/"


def _base(url: str) -> str:
    """`scheme://host[:port]/path` in lower case without the trailing slash; '' for a URL that does not split
    (a claimed SERVER_ENDPOINT of `https://[/rest/` is then simply not a trusted server)."""
    parts = split_url(url.strip())
    if parts is None or not parts.netloc:
        return ""
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


class OAuthServers:
    """The trusted OAuth servers and the one operation on them that matters: confirm a claim."""

    def __init__(
        self,
        servers: list[str],
        *,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.servers = [_base(s) for s in servers]
        self.client_id = client_id
        self._secret = client_secret
        self._http = http
        self._clock = clock

    def server_of(self, server_endpoint: str) -> str | None:
        """The trusted base URL whose REST endpoint `server_endpoint` is, or None."""
        wanted = _base(server_endpoint)
        if not wanted:
            return None
        for server in self.servers:
            if wanted in (server, f"{server}/rest"):
                return server
        return None

    def candidates(self, claim: Claim) -> list[str]:
        """Which servers to ask: the one the claim names (if trusted), else all, the likely one first."""
        if claim.server_endpoint:
            server = self.server_of(claim.server_endpoint)
            if server is None:
                raise Refused(400, "server_endpoint is not one of the trusted OAuth servers (B24R_OAUTH_SERVERS)")
            return [server]
        zone = claim.domain.split(":", 1)[0].rsplit(".", 1)[-1]
        tech_first = zone in _TECH_ZONES
        return sorted(self.servers, key=lambda s: ("bitrix24.tech" in s) != tech_first)

    async def confirm(self, claim: Claim) -> Confirmed:
        """Confirm `claim` or raise Refused. Never trusts a host named by the claim."""
        if not self.client_id or not self._secret:
            raise Refused(
                503, "installs are refused: this server has no B24R_CLIENT_ID and B24R_CLIENT_SECRET configured"
            )
        unreachable = ""
        for server in self.candidates(claim):
            try:
                confirmed = await self._confirm_at(server, claim)
            except httpx.HTTPError as exc:
                unreachable = f"could not reach the OAuth server {server} ({type(exc).__name__})"
                log.warning("%s", unreachable)
                continue
            if confirmed is not None:
                return confirmed
        if unreachable:
            raise Refused(502, unreachable)
        raise Refused(403, "no trusted OAuth server confirmed the access token")

    async def _confirm_at(self, server: str, claim: Claim) -> Confirmed | None:
        access, refresh, expires_at, refreshed = claim.access_token, claim.refresh_token, claim.expires_at, False
        status, info = await self._app_info(server, access)
        if status == "expired":
            # the claim's refresh token, with our secret, at the same server: a valid answer is proof
            tokens = await self._refresh(server, refresh)
            if tokens is None:
                raise Refused(403, "the OAuth server refused to refresh the grant's tokens")
            access, refresh, expires_at = tokens
            refreshed = True
            status, info = await self._app_info(server, access)
        if status != "ok" or info is None:
            return None  # this server does not know the token; another trusted one may
        return self._check(server, claim, info, access, refresh, expires_at, refreshed)

    def _check(
        self,
        server: str,
        claim: Claim,
        info: Mapping[str, Any],
        access: str,
        refresh: str,
        expires_at: float,
        refreshed: bool,
    ) -> Confirmed:
        if str(info.get("client_id") or "") != self.client_id:
            raise Refused(403, "the token belongs to another application")
        install = info.get("install")
        if not isinstance(install, Mapping):
            raise Refused(403, "the OAuth server's answer has no install block")
        member_id = str(install.get("member_id") or "")
        if member_id != claim.member_id:
            raise Refused(403, "member_id does not match the one the OAuth server knows for this token")
        domain = normal_host(str(install.get("domain") or ""))
        if domain != claim.domain:
            raise Refused(403, "the portal's domain does not match the one the OAuth server knows for this token")
        endpoint = str(install.get("client_endpoint") or "") or f"{claim.protocol}://{domain}/rest/"
        user = as_int(info.get("user_id"))
        scope = info.get("scope")
        return Confirmed(
            server=server,
            member_id=member_id,
            domain=domain,
            client_endpoint=endpoint,
            access_token=access,
            refresh_token=refresh,
            expires_at=expires_at,
            user_id=user if user is not None else claim.user_id,
            scopes=scope if isinstance(scope, str) else claim.scopes,
            installed=install.get("installed") in (True, "Y", "1", 1),
            refreshed=refreshed,
        )

    async def _app_info(self, server: str, token: str) -> tuple[str, Mapping[str, Any] | None]:
        """("ok", result) | ("expired", None) | ("unknown", None)."""
        # the token travels in a form body, never in a URL that proxies log
        response = await self._http.post(f"{server}/rest/app.info", data={"auth": token})
        try:
            body = response.json()
        except ValueError:
            return "unknown", None
        if not isinstance(body, Mapping):
            return "unknown", None
        if response.status_code == 200 and isinstance(body.get("result"), Mapping):
            return "ok", body["result"]
        if str(body.get("error", "")).lower() == "expired_token":
            return "expired", None
        return "unknown", None

    async def _refresh(self, server: str, refresh_token: str) -> tuple[str, str, float] | None:
        # a GET with the grant in the query, as the docs give it (docs `settings/oauth/index.md`) and as
        # b24robots.rest.client refreshes
        response = await self._http.get(
            f"{server}/oauth/token/",
            params={
                "grant_type": "refresh_token",
                "client_id": self.client_id,
                "client_secret": self._secret,
                "refresh_token": refresh_token,
            },
        )
        try:
            body = response.json()
        except ValueError:
            return None
        if response.status_code != 200 or not isinstance(body, Mapping) or "error" in body:
            return None
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not isinstance(access, str) or not access:
            return None
        expires = body.get("expires")
        at = as_int(expires)
        expires_at = float(at) if at is not None else self._clock() + 3600.0
        return access, refresh if isinstance(refresh, str) and refresh else refresh_token, expires_at
