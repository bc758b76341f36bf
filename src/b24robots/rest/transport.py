"""One REST request to a portal: the endpoint checked, a rate-limit slot taken, the POST, one redirect
followed, the answer read into a body or a `RestError`.

No retries and no token refresh here (the client does both around `Transport.send`). Contract:
- the token travels in the JSON body as `auth`, after the caller's params, so a caller's own `auth`
  never chooses it, and never in the URL;
- the slot of the portal's bucket is taken right before the POST, only when free (`LimiterState.take`);
  a 503 QUERY_LIMIT_EXCEEDED marks the shared bucket full (`LimiterState.backoff`);
- a 301/302/303/307/308 from the portal moves its REST endpoint (stored through the token store) and
  is followed once; a second one is TOO_MANY_REDIRECTS;
- `time.operating_reset_at` of every answer is remembered per portal and method (`reset_at`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx

from b24robots.errors import ConfigError, MethodError, QueryLimitExceeded, ServerError, TransportError
from b24robots.fields import host_of, split_url
from b24robots.rest.errormap import error_from_answer
from b24robots.rest.limiter import LimiterState, check_rate
from b24robots.rest.tokens import TokenPair, TokenStore, redact

log = logging.getLogger("b24robots.rest")

_T = TypeVar("_T")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Added to a positive limiter wait so that a wake-up never lands a hair before the slot is free
# (float rounding); the slot is taken after the wait, so it does not accumulate.
_LIMIT_MARGIN = 0.001


async def in_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """Run a store call off the event loop (stores may block on a database)."""
    return await asyncio.to_thread(fn, *args)


class Transport:
    """Sends single requests for every portal over one `httpx.AsyncClient` (`http`, shared with the
    OAuth refresh). `allow_http=True` permits plain-http endpoints (loopback simulators only)."""

    def __init__(
        self,
        tokens: TokenStore,
        limiter: LimiterState,
        http: httpx.AsyncClient,
        *,
        rate: float,
        burst: int,
        allow_http: bool,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        check_rate(rate, burst)
        self.http = http
        self.reset_at: dict[tuple[str, str], float] = {}  # (portal, method) -> operating_reset_at
        self._tokens = tokens
        self._limiter = limiter
        self._default_rate = (float(rate), burst)
        self._rates: dict[str, tuple[float, int]] = {}
        self._allow_http = allow_http
        self._clock = clock
        self._sleep = sleep

    def set_rate(self, portal_key: str, rate: float, burst: int) -> None:
        check_rate(rate, burst)
        self._rates[portal_key] = (float(rate), burst)

    def checked_url(self, url: str, what: str, portal_key: str) -> httpx.URL:
        """`url` parsed when it is https (or http with `allow_http`); ConfigError naming the fix otherwise."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigError(f"portal {portal_key!r}: {what} {url!r} is not a valid URL ({exc})") from None
        if parsed.scheme == "https" and parsed.host:
            return parsed
        if parsed.scheme == "http" and parsed.host and self._allow_http:
            return parsed
        if parsed.scheme == "http":
            raise ConfigError(
                f"portal {portal_key!r}: {what} {url!r} is plain http; Bitrix24 portals use https."
                " Allow plain http only for a local simulator: B24R_ALLOW_HTTP_PORTALS=true for the server and"
                " its commands (RestClient(allow_http=True) when you use the client in your own code)."
            )
        raise ConfigError(f"portal {portal_key!r}: {what} {url!r} must be an https URL")

    async def send(
        self,
        portal_key: str,
        pair: TokenPair,
        method: str,
        params: dict[str, Any],
        *,
        redirected: bool = False,
    ) -> tuple[dict[str, Any], str]:
        """POST `method` with `params` and `pair`'s access token; the answer's body and the portal's domain."""
        base = pair.client_endpoint if pair.client_endpoint.endswith("/") else pair.client_endpoint + "/"
        url = self.checked_url(base + method, "client_endpoint", portal_key)
        domain = pair.domain or url.host
        try:
            content = json.dumps({**params, "auth": pair.access_token}, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise MethodError(
                "INVALID_PARAMS", f"params are not JSON-serialisable: {exc}", method=method, portal=domain
            ) from None

        rate, burst = self._rates.get(portal_key, self._default_rate)
        # The slot is taken right before the POST (the portal counts a request when it arrives);
        # while none is free nothing is taken: wait, then try again, as another process may win it.
        while (wait := await in_thread(self._limiter.take, portal_key, self._clock, rate, burst)) > 0:
            await self._sleep(wait + _LIMIT_MARGIN)

        started = time.monotonic()
        try:
            response = await self.http.post(url, content=content.encode(), headers={"Content-Type": "application/json"})
        except httpx.TimeoutException as exc:
            raise TransportError(
                "TIMEOUT", f"no answer in time ({type(exc).__name__})", method=method, portal=domain
            ) from exc
        except httpx.HTTPError as exc:
            raise TransportError(
                "CONNECTION_FAILED", f"{type(exc).__name__}: {exc}", method=method, portal=domain
            ) from exc
        status = response.status_code
        log.debug(
            "%s on %s -> %d in %.3fs (token %s)",
            method,
            domain,
            status,
            time.monotonic() - started,
            redact(pair.access_token),
        )

        if status in _REDIRECTS:
            if redirected:
                raise TransportError("TOO_MANY_REDIRECTS", "the portal redirected twice", method=method, portal=domain)
            new_endpoint = self._moved_endpoint(portal_key, pair, url, response.headers.get("location"), method)
            await in_thread(self._tokens.update_endpoint, portal_key, new_endpoint)
            log.warning("portal %s moved; new REST endpoint %s stored", domain, new_endpoint)
            moved = replace(pair, client_endpoint=new_endpoint, domain=host_of(new_endpoint) or domain)
            return await self.send(portal_key, moved, method, params, redirected=True)

        try:
            body = response.json()
        except ValueError:
            body = None
        if status >= 400 or not isinstance(body, dict) or "error" in body or "result" not in body:
            if status < 400 and isinstance(body, dict) and "error" not in body:
                raise ServerError(
                    "ERROR_UNEXPECTED_ANSWER",
                    "the answer has no result",
                    method=method,
                    portal=domain,
                    status=status,
                )
            error = error_from_answer(status, body, method=method, portal=domain, text=response.text)
            if isinstance(error, QueryLimitExceeded):
                # The bucket was out of step with the portal's (another client on the same IP, or a
                # request slower than ARRIVAL_SLACK): count the shared bucket as full, so the retry
                # and every other process's next request wait for a slot to leak.
                await in_thread(self._limiter.backoff, portal_key, self._clock(), rate, burst)
            raise error

        time_block = body.get("time")
        if isinstance(time_block, Mapping):
            reset_at = time_block.get("operating_reset_at")
            if isinstance(reset_at, int | float) and not isinstance(reset_at, bool):
                self.reset_at[(portal_key, method.lower())] = float(reset_at)
        return body, domain

    def _moved_endpoint(
        self, portal_key: str, pair: TokenPair, url: httpx.URL, location: str | None, method: str
    ) -> str:
        if not location:
            raise TransportError(
                "BAD_REDIRECT", "redirect without a Location header", method=method, portal=pair.domain
            )
        try:
            joined = urljoin(str(url), location)
        except ValueError:  # urljoin splits the Location: "https://[/" raises
            joined = ""
        target, old = split_url(joined), split_url(pair.client_endpoint)
        if target is None or old is None or not target.netloc:
            raise TransportError(
                "BAD_REDIRECT", f"redirect to an invalid URL {location[:80]!r}", method=method, portal=pair.domain
            )
        new_endpoint = f"{target.scheme}://{target.netloc}{old.path or '/rest/'}"
        self.checked_url(new_endpoint, "redirect target", portal_key)
        return new_endpoint
