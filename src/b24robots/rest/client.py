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
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx

from b24robots.errors import (
    ConfigError,
    ExpiredToken,
    MethodError,
    OperationTimeLimit,
    QueryLimitExceeded,
    RestError,
    ServerError,
    TransportError,
)
from b24robots.fields import as_int, host_of, split_url
from b24robots.policy import RetryPolicy, rest_retryable
from b24robots.rest.errormap import error_from_answer, map_error
from b24robots.rest.limiter import LimiterState, MemoryLimiterState, check_rate
from b24robots.rest.phpquery import http_build_query
from b24robots.rest.refresh import Refresher
from b24robots.rest.tokens import AppCredentials, TokenPair, TokenStore, UserToken, redact

__all__ = [
    "BATCH_MAX",
    "BatchResult",
    "Envelope",
    "PortalClient",
    "RestClient",
    "RetryPolicy",
    "is_idempotent",
]

log = logging.getLogger("b24robots.rest")

BATCH_MAX = 50
"""Commands per `batch` request; the portal refuses the rest (protocol §5.4)."""

_T = TypeVar("_T")
_METHOD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]*$")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_IDEMPOTENT = frozenset({"bizproc.event.send", "bizproc.activity.log", "app.info", "profile", "user.get"})
# Added to a positive limiter wait so that a wake-up never lands a hair before the slot is free
# (float rounding); the slot is taken after the wait, so it does not accumulate.
_LIMIT_MARGIN = 0.001
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


if not any(isinstance(f, _RedactQueryFilter) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactQueryFilter())


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


@dataclass(slots=True)
class BatchResult:
    """Per-command outcome of `RestClient.batch`, keyed like the commands (list input: "0", "1", ...).

    `result(key)` returns the command's result or raises its `RestError`; commands a halted batch
    never ran raise MethodError code `NOT_EXECUTED`.
    """

    keys: list[str]
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, RestError] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    next: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    methods: dict[str, str] = field(default_factory=dict)
    portal: str = ""

    @property
    def ok(self) -> bool:
        """True when every command ran without error."""
        return not self.errors and len(self.results) == len(self.keys)

    def result(self, key: str | int) -> Any:
        k = str(key)
        if k in self.errors:
            raise self.errors[k]
        if k in self.results:
            return self.results[k]
        if k not in self.methods:
            raise KeyError(f"no batch command with key {k!r}")
        raise MethodError(
            "NOT_EXECUTED",
            "the batch halted on an earlier error before this command ran",
            method=self.methods[k],
            portal=self.portal,
        )

    __getitem__ = result


def _keyed(group: Any) -> dict[str, Any]:
    # PHP serialises an array with keys 0..n-1 as a JSON list and an empty one as [].
    if isinstance(group, Mapping):
        return {str(k): v for k, v in group.items()}
    if isinstance(group, list):
        return {str(i): v for i, v in enumerate(group)}
    return {}


def _int_or_none(value: Any) -> int | None:
    return as_int(value)


def _page_items(result: Any) -> list[Any]:
    if isinstance(result, list):
        return result
    # Newer list methods wrap the page: {"items": [...]} (crm.item.list), {"tasks": [...]}.
    if isinstance(result, Mapping) and len(result) == 1:
        (only,) = result.values()
        if isinstance(only, list):
            return only
    return [result]


class RestClient:
    """One async client for every portal; tokens come from `tokens`, the bucket from `limiter`.

    `transport` is handed to the internal `httpx.AsyncClient` (tests pass `httpx.MockTransport` or
    `httpx.ASGITransport`). `clock` (unix seconds) and `sleep` are injectable for simulated time.
    `allow_http=True` permits plain-http endpoints (loopback simulators only).
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
        check_rate(rate, burst)
        self._tokens = tokens
        self._app = app
        self._limiter: LimiterState = limiter if limiter is not None else MemoryLimiterState()
        self._default_rate = (float(rate), burst)
        self._rates: dict[str, tuple[float, int]] = {}
        self._retry = retry if retry is not None else RetryPolicy()
        self._allow_http = allow_http
        self._clock = clock
        self._sleep = sleep
        self._reset_at: dict[tuple[str, str], float] = {}
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "b24robots-rest/1"},
        )
        self._refresher = Refresher(
            tokens, app, self._http, self._checked_url, timeout=timeout, clock=clock, sleep=sleep
        )

    @property
    def refreshes(self) -> int:
        """How many token refreshes this client performed (observability and tests)."""
        return self._refresher.refreshes

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def set_rate(self, portal_key: str, rate: float, burst: int) -> None:
        """Use `rate` requests/s with `burst` for this portal (Enterprise plans: 5/s, 250)."""
        check_rate(rate, burst)
        self._rates[portal_key] = (float(rate), burst)

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
            next=_int_or_none(body.get("next")),
            total=_int_or_none(body.get("total")),
            time=time_block if isinstance(time_block, Mapping) else None,
        )

    async def batch(
        self,
        portal_key: str,
        commands: Mapping[str, tuple[str, Mapping[str, Any] | None]] | Sequence[tuple[str, Mapping[str, Any] | None]],
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
        items = self._batch_items(portal_key, commands)
        out = BatchResult(keys=[k for k, _, _ in items], methods={k: m for k, m, _ in items})
        if not items:
            return out
        idem = all(is_idempotent(m) and m.lower() != "batch" for _, m, _ in items)
        for start in range(0, len(items), BATCH_MAX):
            chunk = items[start : start + BATCH_MAX]
            cmd = {k: f"{m}?{q}" if q else m for k, m, q in chunk}
            body, domain = await self._request(portal_key, "batch", {"halt": int(halt), "cmd": cmd}, idem, as_token)
            out.requests += 1
            out.portal = domain
            inner = body.get("result")
            if not isinstance(inner, Mapping):
                raise ServerError(
                    "ERROR_UNEXPECTED_ANSWER",
                    "batch answer has no result object",
                    method="batch",
                    portal=domain,
                )
            results = _keyed(inner.get("result"))
            failures = _keyed(inner.get("result_error"))
            totals = _keyed(inner.get("result_total"))
            nexts = _keyed(inner.get("result_next"))
            for key, method, _ in chunk:
                if key in failures:
                    err = failures[key]
                    code, desc = (
                        (err.get("error"), err.get("error_description")) if isinstance(err, Mapping) else (err, "")
                    )
                    out.errors[key] = map_error(
                        None, str(code or "ERROR_UNKNOWN"), str(desc or ""), method=method, portal=domain
                    )
                elif key in results:
                    out.results[key] = results[key]
                if (n := _int_or_none(totals.get(key))) is not None:
                    out.total[key] = n
                if (n := _int_or_none(nexts.get(key))) is not None:
                    out.next[key] = n
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
            for item in _page_items(env.result):
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

    def _batch_items(
        self,
        portal_key: str,
        commands: Mapping[str, tuple[str, Mapping[str, Any] | None]] | Sequence[tuple[str, Mapping[str, Any] | None]],
    ) -> list[tuple[str, str, str]]:
        pairs: Iterable[tuple[Any, Any]]
        if isinstance(commands, Mapping):
            pairs = commands.items()
        elif isinstance(commands, Sequence) and not isinstance(commands, str | bytes):
            pairs = enumerate(commands)
        else:
            raise MethodError(
                "INVALID_PARAMS",
                "batch commands must be a mapping or a list",
                method="batch",
                portal=portal_key,
            )
        items: list[tuple[str, str, str]] = []
        for key, command in pairs:
            if not (isinstance(command, tuple | list) and len(command) == 2):
                raise MethodError(
                    "INVALID_PARAMS",
                    f"batch command {key!r} must be a (method, params) pair",
                    method="batch",
                    portal=portal_key,
                )
            method, params = command
            self._check_method(portal_key, method)
            try:
                query = http_build_query(params or {})
            except TypeError as exc:
                raise MethodError("INVALID_PARAMS", str(exc), method=method, portal=portal_key) from None
            items.append((str(key), method, query))
        return items

    def _check_method(self, portal_key: str, method: object) -> None:
        if not isinstance(method, str) or not _METHOD_RE.match(method):
            raise MethodError(
                "INVALID_METHOD_NAME",
                f"{method!r} is not a REST method name (letters, digits, dots, underscores)",
                method=str(method),
                portal=portal_key,
            )

    async def _store(self, fn: Callable[..., _T], *args: Any) -> _T:
        # Stores may block on a database; keep the event loop free.
        return await asyncio.to_thread(fn, *args)

    async def _request(
        self,
        portal_key: str,
        method: str,
        params: Mapping[str, Any] | None,
        idempotent: bool | None,
        as_token: UserToken | None = None,
    ) -> tuple[dict[str, Any], str]:
        self._check_method(portal_key, method)
        if params is not None and not isinstance(params, Mapping):
            raise MethodError("INVALID_PARAMS", "params must be a mapping", method=method, portal=portal_key)
        idem = is_idempotent(method, params) if idempotent is None else idempotent
        waited = False
        while True:
            try:
                return await self._with_retries(portal_key, method, dict(params or {}), idem, as_token)
            except OperationTimeLimit as exc:
                reset_at = exc.reset_at or self._reset_at.get((portal_key, method.lower()))
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
        pair = await self._store(self._tokens.load, portal_key)
        if as_token is not None:
            # the installation's endpoint with a user's access token; no refresh token, so an
            # expired one surfaces as ExpiredToken
            user = replace(pair, access_token=as_token.access_token, refresh_token="", expires_at=as_token.expires_at)
            return await self._send(portal_key, user, method, params)
        try:
            return await self._send(portal_key, pair, method, params)
        except ExpiredToken:
            fresh = await self._refresh(portal_key, pair)
            # Replay once with the stored new pair; a second expired_token surfaces.
            return await self._send(portal_key, fresh, method, params)

    def _checked_url(self, url: str, what: str, portal_key: str) -> httpx.URL:
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

    async def _send(
        self,
        portal_key: str,
        pair: TokenPair,
        method: str,
        params: dict[str, Any],
        *,
        redirected: bool = False,
    ) -> tuple[dict[str, Any], str]:
        base = pair.client_endpoint if pair.client_endpoint.endswith("/") else pair.client_endpoint + "/"
        url = self._checked_url(base + method, "client_endpoint", portal_key)
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
        while (wait := await self._store(self._limiter.take, portal_key, self._clock, rate, burst)) > 0:
            await self._sleep(wait + _LIMIT_MARGIN)

        started = time.monotonic()
        try:
            response = await self._http.post(
                url, content=content.encode(), headers={"Content-Type": "application/json"}
            )
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
            await self._store(self._tokens.update_endpoint, portal_key, new_endpoint)
            log.warning("portal %s moved; new REST endpoint %s stored", domain, new_endpoint)
            moved = replace(pair, client_endpoint=new_endpoint, domain=host_of(new_endpoint) or domain)
            return await self._send(portal_key, moved, method, params, redirected=True)

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
                await self._store(self._limiter.backoff, portal_key, self._clock(), rate, burst)
            raise error

        time_block = body.get("time")
        if isinstance(time_block, Mapping):
            reset_at = time_block.get("operating_reset_at")
            if isinstance(reset_at, int | float) and not isinstance(reset_at, bool):
                self._reset_at[(portal_key, method.lower())] = float(reset_at)
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
        self._checked_url(new_endpoint, "redirect target", portal_key)
        return new_endpoint

    async def _refresh(self, portal_key: str, stale: TokenPair) -> TokenPair:
        return await self._refresher.refresh(portal_key, stale)


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

    async def batch(
        self,
        commands: Mapping[str, tuple[str, Mapping[str, Any] | None]] | Sequence[tuple[str, Mapping[str, Any] | None]],
        halt: bool = False,
    ) -> BatchResult:
        return await self._client.batch(self.portal_key, commands, halt, as_token=self._token)

    def list_all(self, method: str, params: Mapping[str, Any] | None = None) -> AsyncIterator[Any]:
        if self._token is not None:
            raise TypeError("list_all is not available with a user's token; page with call_envelope")
        return self._client.list_all(self.portal_key, method, params)
