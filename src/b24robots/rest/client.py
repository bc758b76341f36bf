"""Async Bitrix24 REST client shared by many portals.

Contract in short (details in docs/rest-client.md):

- A call goes to `client_endpoint + method` as a JSON POST; the access token travels in the body as
  `auth` (never in the URL, so access logs never see it).
- Right before every HTTP request a slot of the portal's leaky bucket is taken through `LimiterState`
  (waiting while none is free); a 503 QUERY_LIMIT_EXCEEDED marks the shared bucket full.
- `expired_token` -> one refresh per portal at a time, in this process and across processes
  (`rest/refresh.py`), the new pair is stored, then the call is replayed once.
- Retries (b24robots.policy, short and bounded): QUERY_LIMIT_EXCEEDED always; 5xx, timeouts and transport
  errors only for idempotent calls; OPERATION_TIME_LIMIT waits for its reset when that is near.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from b24robots.errors import ExpiredToken, MethodError, OperationTimeLimit, ServerError
from b24robots.fields import as_int
from b24robots.policy import RetryPolicy, rest_retryable
from b24robots.rest.batching import (
    BATCH_MAX,
    BatchResult,
    Commands,
    batch_items,
    check_method,
    chunk_command,
    page_items,
    read_chunk,
)
from b24robots.rest.limiter import LimiterState, MemoryLimiterState
from b24robots.rest.pools import OriginPools
from b24robots.rest.refresh import Refresher
from b24robots.rest.tokens import AppCredentials, TokenPair, TokenStore, UserToken, redact
from b24robots.rest.transport import Transport, in_thread

__all__ = [
    "BATCH_MAX",
    "BatchResult",
    "Envelope",
    "PortalClient",
    "RestClient",
    "RetryPolicy",
    "install_query_redaction",
    "is_idempotent",
]

log = logging.getLogger("b24robots.rest")

_IDEMPOTENT = frozenset({"bizproc.event.send", "bizproc.activity.log", "app.info", "profile", "user.get"})
_SECRET_QUERY = re.compile(r"((?:refresh_token|client_secret|access_token|auth|code)=)([^&\s\"']+)", re.I)


class _RedactQueryFilter(logging.Filter):
    """httpx logs full request URLs at INFO; the OAuth refresh URL carries secrets in its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _SECRET_QUERY.sub(lambda m: m.group(1) + redact(m.group(2)), str(a))
                if isinstance(a, httpx.URL | str)
                else a
                for a in record.args
            )
        return True


def install_query_redaction() -> None:
    """Mask secrets in the URLs httpx logs (once per process; every `RestClient` calls it when made,
    so code that uses the client without our logging set-up is covered too)."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQueryFilter) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactQueryFilter())


def is_idempotent(method: str, params: Mapping[str, Any] | None = None) -> bool:
    """True for calls that are safe to repeat after an unknown outcome (5xx, timeout).

    Reads (`*.list`, `*.get`, `app.info`, `profile`, `user.get`), `bizproc.event.send` (the first
    answer wins) and `bizproc.activity.log`; a `batch` only when every command is one of those.
    """
    name = method.lower()
    if name == "batch":
        cmd = (params or {}).get("cmd")
        commands: Iterable[Any] = cmd.values() if isinstance(cmd, Mapping) else cmd or ()
        inner = [str(c).split("?", 1)[0] for c in commands]
        return bool(inner) and all(n.lower() != "batch" and is_idempotent(n) for n in inner)
    return name in _IDEMPOTENT or name.endswith((".list", ".get"))


@dataclass(frozen=True, slots=True)
class Envelope:
    """A successful answer: `result` plus paging (`next`, `total`) and the `time` block."""

    result: Any
    next: int | None = None
    total: int | None = None
    time: Mapping[str, Any] | None = None


class RestClient:
    """One async client for every portal; tokens come from `tokens`, the bucket from `limiter`.

    The façade over three layers: `Transport` (one request: endpoint check, rate-limit slot, POST,
    redirect), `Refresher` (the OAuth refresh, single-flight across processes) and the retries and
    `batch`/paging assembly here. `transport` is handed to the internal `httpx.AsyncClient` (tests
    pass `httpx.MockTransport` or `httpx.ASGITransport`; by default a pool per portal, rest/pools.py).
    `clock` (unix seconds) and `sleep` are injectable for simulated time. `allow_http=True` permits
    plain-http endpoints (loopback simulators only).
    """

    def __init__(
        self,
        tokens: TokenStore,
        *,
        app: AppCredentials | None = None,
        limiter: LimiterState | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rate: float = 2.0,
        burst: int = 50,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        allow_http: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        install_query_redaction()
        self._tokens = tokens
        self._retry = retry if retry is not None else RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        if transport is None and not urllib.request.getproxies():
            # a small pool per portal, kept open between batches (the sender answers up to
            # B24R_DELIVERY_CONCURRENCY portals side by side): rest/pools.py says why not one shared pool
            transport = OriginPools()
        http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "b24robots-rest/1"},
            # used only behind a proxy from the environment (all portals through one origin, the proxy):
            # httpx's default keeps 20 connections, so with more portals batches paid new handshakes
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=30.0),
        )
        self._transport = Transport(
            tokens,
            limiter if limiter is not None else MemoryLimiterState(),
            http,
            rate=rate,
            burst=burst,
            allow_http=allow_http,
            clock=clock,
            sleep=sleep,
        )
        self._refresher = Refresher(
            tokens, app, http, self._transport.checked_url, timeout=timeout, clock=clock, sleep=sleep
        )

    @property
    def refreshes(self) -> int:
        """How many token refreshes this client performed (observability and tests)."""
        return self._refresher.refreshes

    async def aclose(self) -> None:
        await self._transport.http.aclose()

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def set_rate(self, portal_key: str, rate: float, burst: int) -> None:
        """Use `rate` requests/s with `burst` for this portal (Enterprise plans: 5/s, 250)."""
        self._transport.set_rate(portal_key, rate, burst)

    def for_portal(self, portal_key: str) -> PortalClient:
        """A view bound to one portal; what robot code receives."""
        return PortalClient(self, portal_key)

    def as_user(self, portal_key: str, token: UserToken) -> PortalClient:
        """A view bound to one portal that calls with a user's access token instead of the
        installation's (same endpoint and rate limit; never refreshed: an expired token raises)."""
        return PortalClient(self, portal_key, token)

    # -- public calls ------------------------------------------------------------------------------

    async def call(
        self,
        portal_key: str,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> Any:
        """Call `method` and return its `result`; raise a `RestError` subclass on failure.

        `idempotent=None` decides from the method name (`is_idempotent`).
        """
        return (await self.call_envelope(portal_key, method, params, idempotent=idempotent)).result

    async def call_envelope(
        self,
        portal_key: str,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
        as_token: UserToken | None = None,
    ) -> Envelope:
        """Like `call` but return the whole answer (`result`, `next`, `total`, `time`)."""
        body, _ = await self._request(portal_key, method, params, idempotent, as_token)
        time_block = body.get("time")
        return Envelope(
            result=body.get("result"),
            next=as_int(body.get("next")),
            total=as_int(body.get("total")),
            time=time_block if isinstance(time_block, Mapping) else None,
        )

    async def batch(
        self,
        portal_key: str,
        commands: Commands,
        halt: bool = False,
        *,
        as_token: UserToken | None = None,
    ) -> BatchResult:
        """Run many commands, at most 50 per HTTP request, and split the answers back per key.

        A failing command does not raise: its `RestError` is in `BatchResult.errors` (and is raised
        by `result(key)`); failures of the batch request itself do raise. With `halt=True` the
        portal stops at the first error and no further chunk is sent. `$result[...]` references
        only work within one chunk of 50.
        """
        items = batch_items(portal_key, commands)
        out = BatchResult(keys=[k for k, _, _ in items], methods={k: m for k, m, _ in items})
        if not items:
            return out
        idem = all(is_idempotent(m) and m.lower() != "batch" for _, m, _ in items)
        for start in range(0, len(items), BATCH_MAX):
            chunk = items[start : start + BATCH_MAX]
            params = {"halt": int(halt), "cmd": chunk_command(chunk)}
            body, domain = await self._request(portal_key, "batch", params, idem, as_token)
            out.requests += 1
            out.portal = domain
            read_chunk(out, body, chunk, domain)
            if halt and any(k in out.errors for k, _, _ in chunk):
                break
        return out

    async def list_all(
        self, portal_key: str, method: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        """Yield every item of a paged list method, following `next` with the `start` parameter."""
        start = 0
        while True:
            page = dict(params or {})
            page["start"] = start
            env = await self.call_envelope(portal_key, method, page, idempotent=True)
            for item in page_items(env.result):
                yield item
            if env.next is None:
                return
            if env.next <= start:
                raise ServerError(
                    "ERROR_UNEXPECTED_ANSWER",
                    f"paging did not advance (start={start}, next={env.next})",
                    method=method,
                    portal=portal_key,
                )
            start = env.next

    # -- internals ---------------------------------------------------------------------------------

    async def _request(
        self,
        portal_key: str,
        method: str,
        params: Mapping[str, Any] | None,
        idempotent: bool | None,
        as_token: UserToken | None = None,
    ) -> tuple[dict[str, Any], str]:
        check_method(portal_key, method)
        if params is not None and not isinstance(params, Mapping):
            raise MethodError("INVALID_PARAMS", "params must be a mapping", method=method, portal=portal_key)
        idem = is_idempotent(method, params) if idempotent is None else idempotent
        waited = False
        while True:
            try:
                return await self._with_retries(portal_key, method, dict(params or {}), idem, as_token)
            except OperationTimeLimit as exc:
                reset_at = exc.reset_at or self._transport.reset_at.get((portal_key, method.lower()))
                exc.reset_at = reset_at
                wait = None if reset_at is None else reset_at - self._clock()
                if waited or wait is None or wait > self._retry.max_operation_wait:
                    raise
                waited = True
                log.warning("%s on %s blocked by operating-time limit; waiting %.1fs", method, exc.portal, wait)
                await self._sleep(max(wait, 0.0))

    async def _with_retries(
        self, portal_key: str, method: str, params: dict[str, Any], idem: bool, as_token: UserToken | None = None
    ) -> tuple[dict[str, Any], str]:
        policy = self._retry
        if policy.attempts <= 1:
            return await self._attempt(portal_key, method, params, as_token)

        started = time.monotonic()
        attempt = 1
        while True:
            if attempt > 1:
                log.info("retrying %s on %s (attempt %d)", method, portal_key, attempt)
            try:
                return await self._attempt(portal_key, method, params, as_token)
            except Exception as exc:
                if not rest_retryable(exc, idem) or not policy.retry_after(attempt, time.monotonic() - started):
                    raise
            # real time, like the call's `timeout` (the injected sleep serves limiter waits)
            await asyncio.sleep(policy.wait(attempt, random.random()))
            attempt += 1

    async def _attempt(
        self, portal_key: str, method: str, params: dict[str, Any], as_token: UserToken | None = None
    ) -> tuple[dict[str, Any], str]:
        pair: TokenPair = await in_thread(self._tokens.load, portal_key)
        send = self._transport.send
        if as_token is not None:
            # the installation's endpoint with a user's access token; no refresh token, so an
            # expired one surfaces as ExpiredToken
            user = replace(pair, access_token=as_token.access_token, refresh_token="", expires_at=as_token.expires_at)
            return await send(portal_key, user, method, params)
        try:
            return await send(portal_key, pair, method, params)
        except ExpiredToken:
            fresh = await self._refresher.refresh(portal_key, pair)
            # Replay once with the stored new pair; a second expired_token surfaces.
            return await send(portal_key, fresh, method, params)


class PortalClient:
    """`RestClient` bound to one portal: `call`, `call_envelope`, `batch`, `list_all`; with `token`,
    every call uses that user's access token (`RestClient.as_user`)."""

    def __init__(self, client: RestClient, portal_key: str, token: UserToken | None = None) -> None:
        self._client = client
        self.portal_key = portal_key
        self._token = token

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool | None = None
    ) -> Any:
        return (await self.call_envelope(method, params, idempotent=idempotent)).result

    async def call_envelope(
        self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool | None = None
    ) -> Envelope:
        return await self._client.call_envelope(
            self.portal_key, method, params, idempotent=idempotent, as_token=self._token
        )

    async def batch(self, commands: Commands, halt: bool = False) -> BatchResult:
        return await self._client.batch(self.portal_key, commands, halt, as_token=self._token)

    def list_all(self, method: str, params: Mapping[str, Any] | None = None) -> AsyncIterator[Any]:
        if self._token is not None:
            raise TypeError("list_all is not available with a user's token; page with call_envelope")
        return self._client.list_all(self.portal_key, method, params)
