"""A small Bitrix24 portal + OAuth server behind httpx.MockTransport, for precise client rules.

It keeps its own state the way the portal does (a counter-based leaky bucket, live tokens,
paging, batch with per-command errors) so tests check the client against behaviour, not against
canned answers.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import qs_codec

from b24robots.rest import MemoryTokenStore, TokenPair

CLIENT_ID = "local.abc123.4567"
CLIENT_SECRET = "s3cr3t-client-secret-value"
DOMAIN = "example.bitrix24.com"
OAUTH = "https://oauth.bitrix.info"


class SimClock:
    """Simulated unix time; `sleep` advances it instead of waiting."""

    def __init__(self, start: float = 1_750_000_000.0, *, frozen: bool = False) -> None:
        self.now = start
        self.frozen = frozen
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if not self.frozen:
            self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Fault:
    """An answer injected for the next request to `method` (or any method when None)."""

    status: int = 500
    body: Any = None
    method: str | None = None
    raise_exc: Exception | None = None
    headers: dict[str, str] = field(default_factory=dict)


class FakePortal:
    def __init__(
        self,
        clock: SimClock,
        *,
        domain: str = DOMAIN,
        rate: float = 2.0,
        burst: int = 50,
        scheme: str = "https",
    ) -> None:
        self.clock = clock
        self.domain = domain
        self.scheme = scheme
        self.rate = rate
        self.burst = burst
        self.level = 0.0
        self.level_at = clock()
        self.access: dict[str, float] = {}
        self.refresh: set[str] = set()
        self.requests: list[httpx.Request] = []
        self.portal_requests: list[tuple[str, dict[str, Any]]] = []
        self.refresh_requests: list[dict[str, str]] = []
        self.refused_503 = 0
        self.faults: deque[Fault] = deque()
        self.items = [{"ID": str(i)} for i in range(1, 121)]
        self.refresh_delay = 0.0
        self.on_refresh: Callable[[], None] | None = None
        self.store_at_replay: list[int] = []
        self.token_store: MemoryTokenStore | None = None
        self.moved_to: str | None = None
        self.operating_reset_at: float | None = None

    # -- setup --------------------------------------------------------------------------------
    def issue(self, version: int = 1) -> TokenPair:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.access[access] = self.clock() + 3600
        self.refresh.add(refresh)
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            expires_at=self.clock() + 3600,
            version=version,
            client_endpoint=f"{self.scheme}://{self.domain}/rest/",
            server_endpoint=f"{OAUTH}/rest/",
            domain=self.domain,
            member_id="3d906b2a32030386ccc7274d2313a01b",
        )

    def expire_all(self) -> None:
        for token in self.access:
            self.access[token] = self.clock() - 1

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- wire -------------------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == urlsplit(OAUTH).hostname:
            return await self._oauth(request)
        method = request.url.path.removeprefix("/rest/")
        body = json.loads(request.content or b"{}")
        self.portal_requests.append((method, body))
        if self.moved_to and request.url.host != self.moved_to:
            return httpx.Response(302, headers={"Location": f"https://{self.moved_to}/rest/{method}"})
        if self.faults and self.faults[0].method in (None, method):
            fault = self.faults.popleft()
            if fault.raise_exc is not None:
                raise fault.raise_exc
            return httpx.Response(fault.status, json=fault.body, headers=fault.headers)
        # leaky bucket, counter form (independent of the client's GCRA form)
        now = self.clock()
        self.level = max(0.0, self.level - (now - self.level_at) * self.rate)
        self.level_at = now
        if self.level + 1 > self.burst + 1e-9:
            self.refused_503 += 1
            return _err(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        self.level += 1
        token = body.get("auth")
        if token not in self.access:
            return _err(401, "NO_AUTH_FOUND", "Wrong authorization data")
        if self.access[token] <= now:
            return _err(401, "expired_token", "The access token provided has expired")
        if self.token_store is not None:
            self.store_at_replay.append(self.token_store.load("p1").version)
        return self._execute(method, body)

    def _time(self) -> dict[str, Any]:
        t: dict[str, Any] = {"start": self.clock(), "finish": self.clock(), "duration": 0.0}
        if self.operating_reset_at is not None:
            t["operating_reset_at"] = self.operating_reset_at
            t["operating"] = 1.5
        return t

    def _run(self, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any] | None, dict[str, Any]]:
        """Result, error (or None) and paging extras for one method."""
        if method in ("crm.deal.list", "user.get"):
            start = int(params.get("start", 0) or 0)
            page = self.items[start : start + 50]
            extra: dict[str, Any] = {"total": len(self.items)}
            if start + 50 < len(self.items):
                extra["next"] = start + 50
            return page, None, extra
        if method == "crm.item.list":
            start = int(params.get("start", 0) or 0)
            extra = {"total": len(self.items)}
            if start + 50 < len(self.items):
                extra["next"] = start + 50
            return {"items": self.items[start : start + 50]}, None, extra
        if method == "echo":
            return params, None, {}
        if method == "fail":
            return None, {"error": "ERROR_CORE", "error_description": f"failed {params.get('n', '')}"}, {}
        if method == "batch":
            return None, {"error": "ERROR_BATCH_METHOD_NOT_ALLOWED", "error_description": "nested"}, {}
        return True, None, {}

    def _execute(self, method: str, body: dict[str, Any]) -> httpx.Response:
        params = {k: v for k, v in body.items() if k != "auth"}
        if method == "batch":
            return self._batch(params)
        result, error, extra = self._run(method, params)
        if error is not None:
            return httpx.Response(400, json=error)
        return httpx.Response(200, json={"result": result, **extra, "time": self._time()})

    def _batch(self, params: dict[str, Any]) -> httpx.Response:
        cmd = params.get("cmd") or {}
        halt = bool(int(params.get("halt", 0)))
        items = list(cmd.items()) if isinstance(cmd, dict) else list(enumerate(cmd))
        out: dict[str, dict[str, Any]] = {
            "result": {},
            "result_error": {},
            "result_total": {},
            "result_next": {},
            "result_time": {},
        }
        for n, (key, command) in enumerate(items):
            if n >= 50:
                out["result_error"][str(key)] = {
                    "error": "ERROR_BATCH_LENGTH_EXCEEDED",
                    "error_description": "Max batch length exceeded",
                }
                continue
            method, _, query = str(command).partition("?")
            result, error, extra = self._run(method, dict(qs_codec.decode(query)) if query else {})
            if error is not None:
                out["result_error"][str(key)] = error
                if halt:
                    break
                continue
            out["result"][str(key)] = result
            if "total" in extra:
                out["result_total"][str(key)] = extra["total"]
            if "next" in extra:
                out["result_next"][str(key)] = extra["next"]
        # PHP: an array with keys 0..n-1 is a JSON list, an empty one is []
        shaped = {name: _php_array(group) for name, group in out.items()}
        return httpx.Response(200, json={"result": shaped, "time": self._time()})

    async def _oauth(self, request: httpx.Request) -> httpx.Response:
        query = dict(parse_qsl(request.url.query.decode()))
        self.refresh_requests.append(query)
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        if query.get("client_id") != CLIENT_ID or query.get("client_secret") != CLIENT_SECRET:
            return _err(401, "invalid_client", "Invalid client")
        old = query.get("refresh_token", "")
        if query.get("grant_type") != "refresh_token" or old not in self.refresh:
            return _err(400, "invalid_grant", "Invalid grant")
        if self.on_refresh is not None:
            self.on_refresh()
        self.refresh.discard(old)
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.access[access] = self.clock() + 3600
        self.refresh.add(refresh)
        return httpx.Response(
            200,
            json={
                "access_token": access,
                "refresh_token": refresh,
                "expires": int(self.clock()) + 3600,
                "expires_in": 3600,
                "domain": "oauth.bitrix.info",
                "client_endpoint": f"https://{self.domain}/rest/",
                "server_endpoint": f"{OAUTH}/rest/",
                "member_id": "3d906b2a32030386ccc7274d2313a01b",
                "status": "L",
                "scope": "crm,bizproc",
                "user_id": 1,
            },
        )


def _php_array(group: dict[str, Any]) -> Any:
    if not group:
        return []
    if list(group) == [str(i) for i in range(len(group))]:
        return list(group.values())
    return group


def _err(status: int, code: str, description: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "error_description": description})
