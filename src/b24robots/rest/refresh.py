"""Token refresh: one at a time per portal, in this process and across every process of the store.

Bitrix24's OAuth server spends a refresh token on first use (the answer carries a new one), so two
processes refreshing with the same token always cost one of them `invalid_grant`. Therefore:

1. In this process an asyncio lock per portal lets one caller refresh; the others wait and then use
   the pair it stored.
2. Across processes the refresher first takes the store's refresh claim for the pair's version
   (`TokenStore.claim_refresh`, one UPDATE; no transaction stays open while the OAuth server
   answers). Whoever does not get it polls the store until the version changes, and takes the claim
   itself only if the holder's claim lapsed (the holder died).
3. `invalid_grant` marks the installation `needs_reinstall` only while the pair it tried is still
   the stored one; a pair stored later (a refresh elsewhere, a re-install) clears the mark.

The OAuth exchange itself is `GET <server>/oauth/token/?grant_type=refresh_token&client_id=...
&client_secret=...&refresh_token=...` (bitrix24/b24restdocs `settings/oauth/index.md`, "Token
refresh"); its answer carries `access_token`, `refresh_token`, `expires` (unix time) and `expires_in`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from b24robots.errors import ConfigError, InvalidGrant, ServerError, TransportError
from b24robots.fields import as_int
from b24robots.rest.errormap import error_from_answer
from b24robots.rest.tokens import AppCredentials, TokenPair, TokenStore, redact

log = logging.getLogger("b24robots.rest")

_T = TypeVar("_T")

POLL = 0.05
"""Seconds between looks at the store while another process refreshes."""
CLAIM_MARGIN = 5.0
"""A refresh claim lasts the OAuth request's timeout plus this, so it lapses only when its holder died."""
REINSTALL_MESSAGE = "The refresh token was refused (invalid_grant); re-install the application on the portal."


class Refresher:
    """Refreshes the token pairs of `tokens` through the OAuth server named in each pair.

    `checked_url(url, what, portal_key)` validates an endpoint the way the client does (https, or
    http for loopback simulators); `timeout` bounds one OAuth request and sizes the claim.
    """

    def __init__(
        self,
        tokens: TokenStore,
        app: AppCredentials | None,
        http: httpx.AsyncClient,
        checked_url: Callable[[str, str, str], httpx.URL],
        *,
        timeout: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._tokens = tokens
        self._app = app
        self._http = http
        self._checked_url = checked_url
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}
        self.holder = f"refresh:{uuid.uuid4().hex}"
        self.refreshes = 0
        """How many refreshes this process performed at the OAuth server and stored."""

    async def _store(self, fn: Callable[..., _T], *args: Any) -> _T:
        # Stores may block on a database; keep the event loop free.
        return await asyncio.to_thread(fn, *args)

    async def refresh(self, portal_key: str, stale: TokenPair) -> TokenPair:
        """Return a pair newer than `stale`: refreshed here, or by whoever refreshed meanwhile."""
        lock = self._locks.setdefault(portal_key, asyncio.Lock())
        async with lock:
            current = await self._store(self._tokens.load, portal_key)
            if current.version != stale.version or current.access_token != stale.access_token:
                return current  # refreshed by another caller meanwhile
            ttl = self._timeout + CLAIM_MARGIN
            # Waiting for another holder is bounded by its claim: when that lapses, we take it over.
            while not await self._store(
                self._tokens.claim_refresh, portal_key, current.version, self.holder, self._clock(), ttl
            ):
                await self._sleep(POLL)
                latest = await self._store(self._tokens.load, portal_key)
                if latest.version != current.version:
                    return latest
            try:
                new = await self._exchange(portal_key, current)
            except InvalidGrant:
                if await self._store(self._tokens.mark_needs_reinstall, portal_key, REINSTALL_MESSAGE, current.version):
                    raise
                return await self._store(self._tokens.load, portal_key)  # a new pair arrived meanwhile
            except BaseException:
                await self._store(self._tokens.release_refresh, portal_key, self.holder)
                raise
            if await self._store(self._tokens.swap, portal_key, current.version, new):
                self.refreshes += 1
                log.info(
                    "refreshed tokens of %s (version %d, access %s)",
                    current.domain,
                    new.version,
                    redact(new.access_token),
                )
                return new
            # Re-installed while we refreshed: the install's pair is the one to use.
            return await self._store(self._tokens.load, portal_key)

    async def _exchange(self, portal_key: str, pair: TokenPair) -> TokenPair:
        if self._app is None:
            raise ConfigError(
                "the access token expired but RestClient has no app credentials;"
                " pass RestClient(app=AppCredentials(client_id, client_secret))"
            )
        server = self._checked_url(pair.server_endpoint, "server_endpoint", portal_key)
        # <server>/rest/ -> <server>/oauth/token/ (https://oauth.bitrix.info/rest/ -> .../oauth/token/);
        # the server endpoint was confirmed as one of B24R_OAUTH_SERVERS at install (b24robots.portal.oauth)
        base = str(server).rstrip("/").removesuffix("/rest")
        token_url = f"{base}/oauth/token/"
        query = {
            "grant_type": "refresh_token",
            "client_id": self._app.client_id,
            "client_secret": self._app.client_secret,
            "refresh_token": pair.refresh_token,
        }
        where: dict[str, Any] = {"method": "oauth/token", "portal": pair.domain}
        try:
            response = await self._http.get(token_url, params=query, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise TransportError("TIMEOUT", "the OAuth server did not answer in time", **where) from exc
        except httpx.HTTPError as exc:
            raise TransportError("CONNECTION_FAILED", f"OAuth server: {type(exc).__name__}", **where) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and str(body.get("error", "")).lower() == "invalid_grant":
            raise InvalidGrant(
                str(body["error"]),
                "the refresh token was refused; the application must be re-installed on the portal"
                " (open it in Bitrix24 as an administrator) to issue new tokens",
                status=response.status_code,
                **where,
            )
        if response.status_code >= 400 or not isinstance(body, dict) or "error" in body:
            raise error_from_answer(response.status_code, body, text=response.text, **where)
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not isinstance(access, str) or not access:
            raise ServerError("ERROR_UNEXPECTED_ANSWER", "the OAuth answer has no access_token", **where)
        # ASCII digits only (fields.py): "²".isdigit() is true and float("²") raises
        expires, expires_in = as_int(body.get("expires")), as_int(body.get("expires_in", 3600))
        if expires is not None:
            expires_at = float(expires)
        else:
            expires_at = self._clock() + float(3600 if expires_in is None else expires_in)
        # The OAuth server (the one we trust, see _checked_url above) tells where the portal now lives:
        # a renamed portal's `client_endpoint` moves here. The answer's `domain` is the OAuth server's
        # own host, so the stored domain stays (robot calls rename it from auth[domain]).
        endpoint = pair.client_endpoint
        moved = body.get("client_endpoint")
        if isinstance(moved, str) and moved and str(body.get("member_id") or pair.member_id) == pair.member_id:
            try:
                self._checked_url(moved, "client_endpoint", portal_key)
            except ConfigError as exc:
                log.warning("ignored the refresh answer's client_endpoint: %s", exc)
            else:
                if moved != endpoint:
                    log.info("portal %s moved its REST endpoint to %s", pair.domain, moved)
                endpoint = moved
        return replace(
            pair,
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else pair.refresh_token,
            expires_at=expires_at,
            version=pair.version + 1,
            client_endpoint=endpoint,
        )
