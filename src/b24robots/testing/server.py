"""Serve a :class:`PortalSimulator` on a real port with uvicorn in a background thread."""

from __future__ import annotations

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
    """

    def __init__(
        self, sim: PortalSimulator, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
    ) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._config = uvicorn.Config(
            sim.app, host=host, port=port, log_level=log_level, lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="b24-portal-simulator", daemon=True)
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
