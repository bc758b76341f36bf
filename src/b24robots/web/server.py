"""How `b24robots serve` runs the app under uvicorn: who is believed, how long a client may take, how
many connections it may hold.

- Proxy headers (`X-Forwarded-For`, `X-Forwarded-Proto`) are believed only from the addresses in
  `B24R_TRUSTED_PROXIES`; by default from nobody (uvicorn alone would trust loopback).
- uvicorn has no deadline for a request's headers or body (its keep-alive timeout only covers idle
  connections between requests), so a slow client could hold a socket for ever. Our protocol class
  closes a connection whose headers are not complete within `B24R_HEADER_TIMEOUT` seconds (408) or
  whose body is not complete within `B24R_BODY_TIMEOUT` seconds after its headers.
- A client address may hold at most `B24R_MAX_CONNECTIONS_PER_ADDRESS` connections (trusted proxies
  are exempt); more are answered 503 and closed before anything is read. `B24R_MAX_CONNECTIONS`
  caps all of them (uvicorn's `limit_concurrency`, also 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import socket
from collections import Counter
from collections.abc import Generator, Sequence
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed (or not built for this interpreter)
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from b24robots.config import Settings

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
TOO_MANY = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class ConnectionGuard:
    """Deadlines and per-address connection counts shared by every connection of one server (used on
    the event loop's thread only)."""

    def __init__(
        self, *, header_timeout: float, body_timeout: float, per_address: int, exempt: Sequence[str] = ()
    ) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.per_address = per_address
        self._exempt = [ipaddress.ip_network(item, strict=False) for item in exempt]
        self.open: Counter[str] = Counter()
        self.timed_out = 0
        self.refused = 0

    def exempted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._exempt)

    def admit(self, host: str) -> bool:
        """Count a new connection from a (not exempted) host; False when it holds too many already."""
        if self.open[host] >= self.per_address:
            self.refused += 1
            return False
        self.open[host] += 1
        return True

    def release(self, host: str) -> None:
        if self.open[host] > 0:
            self.open[host] -= 1
        if self.open[host] == 0:
            del self.open[host]


class _Guarded:
    """What both HTTP protocols share: admit or refuse a connection, and one deadline at a time."""

    guard: ClassVar[ConnectionGuard]
    _host = ""
    _counted = False
    _timer: asyncio.TimerHandle | None = None
    _phase = ""
    # set by uvicorn's protocols
    client: tuple[str, int] | None
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _admit(self) -> None:
        """Call after the protocol's own connection_made."""
        self._host = self.client[0] if self.client else ""
        if self._exempt_or_admit():
            self._arm("head")
        else:
            self.transport.write(TOO_MANY)
            self.transport.close()

    def _exempt_or_admit(self) -> bool:
        if self.guard.exempted(self._host):
            return True
        self._counted = self.guard.admit(self._host)
        return self._counted

    def _release(self) -> None:
        """Call before the protocol's own connection_lost."""
        self._disarm()
        if self._counted:
            self._counted = False
            self.guard.release(self._host)

    def _arm(self, phase: str) -> None:
        self._disarm()
        self._phase = phase
        delay = self.guard.header_timeout if phase == "head" else self.guard.body_timeout
        self._timer = self.loop.call_later(delay, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._phase = ""

    def _expire(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        self.guard.timed_out += 1
        # a 408 only where no answer is half-written: no request yet, this one's not started, or the
        # previous one on a kept-alive connection complete
        if self.cycle is None or not self.cycle.response_started or self.cycle.response_complete:
            self.transport.write(TIMED_OUT)
        self.transport.close()


class _GuardedH11(_Guarded, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._admit()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._timer is None and self.conn.their_state is h11.IDLE:
            self._arm("head")  # the first bytes of a request on a kept-alive connection
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body")
        elif state is not h11.IDLE:
            self._disarm()


if HttpToolsProtocol is not None:

    class _GuardedHttpTools(_Guarded, HttpToolsProtocol):
        # httptools calls these as it parses: the first byte of a request, the end of its headers, the
        # end of its body (at once after the headers when there is none)
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._admit()

        def connection_lost(self, exc: Exception | None) -> None:
            self._release()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            if self._timer is None:
                self._arm("head")  # the first bytes of a request on a kept-alive connection
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm("body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()


def guarded_protocol(guard: ConnectionGuard, http: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with the deadlines and the per-address cap of `guard`: `httptools` (uvicorn's
    C parser, the default where it is installed) or `h11` (pure Python)."""
    if http == "auto":
        http = "httptools" if HttpToolsProtocol is not None else "h11"
    if http == "httptools":
        if HttpToolsProtocol is None:
            raise ValueError("httptools is not installed")
        return type("GuardedHttpToolsProtocol", (_GuardedHttpTools,), {"guard": guard})
    if http == "h11":
        return type("GuardedH11Protocol", (_GuardedH11,), {"guard": guard})
    raise ValueError(f"unknown HTTP protocol {http!r}: httptools, h11 or auto")


class ServerConfig(uvicorn.Config):
    guard: ConnectionGuard


class Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT it shut down gracefully for is not raised
    again afterwards (uvicorn re-raises it, so `serve` died with -15 after a clean stop): the
    process exits 0, as the worker does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)  # the app's lifespan (services, workers) has started
        settle_heap()


def settle_heap() -> None:
    """Once a process has started: what is alive now lives as long as the process, so the cyclic garbage
    collector stops scanning it (`gc.freeze`). A full collection scanned every module, class and cached
    object each time: about 100 ms in which no request was answered, the intake's slowest acknowledgements
    (bench/intake.py p99). Later objects are collected as before."""
    gc.collect()
    gc.freeze()


def server_config(
    app: Any, settings: Settings, *, host: str, port: int, http: str = "auto", **options: Any
) -> ServerConfig:
    """The uvicorn configuration `b24robots serve` runs with (tests start real servers from it).

    `http` picks the protocol (see `guarded_protocol`); the event loop is uvicorn's `auto`: uvloop where it
    is installed. Access lines are off: one per robot call is CPU every call pays (issue 20), and
    `logs.setup_logging` would still see them only at INFO."""
    proxies = settings.trusted_proxy_list
    guard = ConnectionGuard(
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        per_address=settings.max_connections_per_address,
        exempt=proxies,
    )
    config = ServerConfig(
        app,
        host=host,
        port=port,
        http=guarded_protocol(guard, http),
        loop=options.pop("loop", "auto"),
        access_log=options.pop("access_log", False),
        proxy_headers=bool(proxies),
        forwarded_allow_ips=",".join(proxies) if proxies else "",
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=15,
        log_level=options.pop("log_level", "warning"),
        # no uvicorn handlers of its own: its error tracebacks and access lines propagate to the root
        # logger, i.e. through `logs.setup_logging`'s JSON format and its redaction
        log_config=options.pop("log_config", None),
        **options,
    )
    config.guard = guard
    return config
