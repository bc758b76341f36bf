"""Connections kept per portal: one small httpcore pool per origin instead of one pool for every portal.

httpcore's pool looks at every connection it holds whenever a request starts or a response is closed
(expired? idle? able to take this origin? each asks the socket with a poll), so with one shared pool the
work per request grows with the number of portals served at once: with 100 portals a quarter of the
sender's CPU went to that bookkeeping (bench/delivery.py). Here each origin (scheme, host, port) has
its own pool of at most `per_origin` connections; pools idle for longer than `keepalive` are closed.

Contract:
- requests reach `httpx.AsyncHTTPTransport`s made with one shared TLS context (verifying, the
  system's CA store as httpx's default), so nothing about TLS changes;
- a pool is closed only when none of its requests is in flight (a response counts until it is closed);
- `aclose()` closes every pool.
Proxies from the environment are httpx's own business: `RestClient` uses this only when none is set.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

SWEEP_EVERY = 10.0
"""Seconds between looks for idle pools to close."""


@dataclass
class _Pool:
    transport: httpx.AsyncHTTPTransport
    in_flight: int = 0
    last_used: float = 0.0


class _Tracked(httpx.AsyncByteStream):
    """A response body that tells its pool when it is closed (the request is over only then)."""

    def __init__(self, stream: httpx.AsyncByteStream, done: Callable[[], None]) -> None:
        self._stream = stream
        self._done: Callable[[], None] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._done is not None:
                done, self._done = self._done, None
                done()


class OriginPools(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        per_origin: int = 32,
        keepalive: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = httpx.Limits(
            max_connections=per_origin, max_keepalive_connections=per_origin, keepalive_expiry=keepalive
        )
        self._keepalive = keepalive
        self._ssl = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self._clock = clock
        self._pools: dict[tuple[bytes, bytes, int | None], _Pool] = {}
        self._next_sweep = clock() + SWEEP_EVERY

    @property
    def origins(self) -> int:
        """Pools open now (observability and tests)."""
        return len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            await self._close_idle(now)
        key = (request.url.raw_scheme, request.url.raw_host, request.url.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(httpx.AsyncHTTPTransport(verify=self._ssl, limits=self._limits))
        pool.in_flight += 1
        pool.last_used = now

        def done() -> None:
            pool.in_flight -= 1
            pool.last_used = self._clock()

        try:
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            done()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Tracked(response.stream, done)
        return response

    async def _close_idle(self, now: float) -> None:
        idle = [k for k, p in self._pools.items() if p.in_flight == 0 and now - p.last_used > self._keepalive]
        for key in idle:
            await self._pools.pop(key).transport.aclose()

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.transport.aclose()
