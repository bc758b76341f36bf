"""Serve a :class:`PortalSimulator` on a real port with uvicorn in a background thread."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from types import TracebackType

import uvicorn

from b24robots.errors import SimulatorError

from .simulator import PortalSimulator


class SimulatorServer:
    """``with SimulatorServer(sim) as server:`` serves ``sim.app`` on ``server.base_url``.

    ``port=0`` picks a free port. On entry ``sim.base_url`` is set to the served address so that
    every endpoint the simulator hands out (client_endpoint, server_endpoint) points here.
    ``addresses=N`` (loopback ``host`` only) also listens on the next N-1 loopback addresses, same port,
    and spreads the portals' REST endpoints over them (``sim.portal_addresses``): each portal at an
    origin of its own, as cloud portals are, for clients that keep connections per origin.
    """

    def __init__(
        self,
        sim: PortalSimulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        addresses: int = 1,
    ) -> None:
        if addresses > 1 and not ipaddress.ip_address(host).is_loopback:
            raise SimulatorError(f"addresses={addresses} needs a loopback host, not {host!r}")
        self.sim = sim
        self.host = host
        self.port = port
        self.addresses = addresses
        self._config = uvicorn.Config(
            sim.app, host=host, port=port, log_level=log_level, lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _listen(self) -> list[socket.socket]:
        """The sockets of ``addresses`` loopback addresses, all on one port (the first one picks it)."""
        first = ipaddress.ip_address(self.host)
        sockets: list[socket.socket] = []
        try:
            for n in range(self.addresses):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((str(first + n), self.port if n == 0 else sockets[0].getsockname()[1]))
                sockets.append(sock)
        except OSError as exc:
            for sock in sockets:
                sock.close()
            raise SimulatorError(
                f"the simulator could not listen on {self.addresses} loopback addresses: {exc}"
            ) from None
        return sockets

    def start(self, timeout: float = 10.0) -> None:
        if self.addresses > 1:
            listening = self._listen()
            self.port = int(listening[0].getsockname()[1])
            self.sim.portal_addresses = [f"http://{s.getsockname()[0]}:{self.port}" for s in listening]
            target = lambda: self._server.run(sockets=listening)  # noqa: E731
        else:
            target = self._server.run
        self._thread = threading.Thread(target=target, name="b24-portal-simulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise SimulatorError(f"the simulator could not listen on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise SimulatorError(f"the simulator did not start within {timeout} s")
            time.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self.sim.base_url = self.base_url

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.sim.portal_addresses = []

    def wait(self) -> None:
        """Block until the server stops (Ctrl+C in the standalone command)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
