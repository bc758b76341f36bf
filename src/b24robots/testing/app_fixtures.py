"""A b24robots server wired to a portal simulator, in one process, for tests.

    async with RobotHarness(router, data_dir=tmp_path) as h:
        wf = await h.run_robot("send_sms", properties={"phone": "+49 30 1234567"})
        assert wf.return_values["ok"] == "Y"

Both apps talk over real ASGI (httpx transports), so every byte crosses the same code paths as in
production: the install event, app.info verification, sync, the robot call, the worker, the
batched `bizproc.event.send` and the simulator's processing of it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from b24robots.config import Settings
from b24robots.rest.client import RetryPolicy
from b24robots.robots.router import Router
from b24robots.store.db import Database
from b24robots.store.journal import FAILED, QUEUED, RUNNING
from b24robots.store.models import InvocationRow
from b24robots.testing.model import Portal, SimApp, Workflow
from b24robots.testing.simulator import PortalSimulator
from b24robots.web.app import create_app
from b24robots.web.services import Services, build_services

PUBLIC_URL = "http://robots.example.test"


class RobotHarness:
    def __init__(
        self,
        router: Router | None = None,
        *,
        data_dir: Path,
        database_url: str = "",
        sim: PortalSimulator | None = None,
        workers: bool = True,
        sandbox: bool = True,
        settings: dict[str, Any] | None = None,
        api_only: bool = True,
    ) -> None:
        self.router = router if router is not None else Router()
        self.data_dir = data_dir
        self.database_url = database_url
        self.workers = workers
        self.sandbox = sandbox
        self.extra = settings or {}
        self.sim = sim or PortalSimulator()
        self.portal: Portal = self.sim.add_portal() if not self.sim.portals else next(iter(self.sim.portals.values()))
        self.app: SimApp = self.sim.register_app(
            "b24robots",
            install_url=f"{PUBLIC_URL}/b24/install",
            api_only=api_only,
        )
        self.services: Services | None = None

    @property
    def svc(self) -> Services:
        assert self.services is not None, "use the harness inside `async with`"
        return self.services

    async def __aenter__(self) -> RobotHarness:
        options: dict[str, Any] = {
            "data_dir": self.data_dir,
            "database_url": self.database_url,
            "public_url": PUBLIC_URL,
            "client_id": self.app.client_id,
            "client_secret": SecretStr(self.app.client_secret),
            "secret_key": SecretStr("test-secret-key"),
            "allow_http_portals": True,
            "oauth_servers": self.sim.oauth_url,
        }
        options.update(self.extra)
        settings = Settings(**options)
        db = Database(settings.effective_database_url)
        self.services = build_services(
            settings,
            self.router,
            transport=httpx.ASGITransport(app=self.sim.app),
            retry=RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.05, wait_jitter=0.0, timeout=5.0),
            database=db,
        )
        self.asgi = create_app(services=self.services, run_workers=self.workers, run_sandbox=self.sandbox)
        self.sim.handler_transport = httpx.ASGITransport(app=self.asgi)
        await self.services.start(workers=self.workers, sandbox=self.sandbox)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.services is not None:
            await self.services.stop(grace=2.0)
        await self.sim.aclose()

    async def install(self) -> None:
        """Install the app on the portal (ONAPPINSTALL to our server) and wait for the first sync."""
        await self.sim.install_app(self.app, self.portal)
        await self.svc.wait_syncs()

    def client(self) -> httpx.AsyncClient:
        """An HTTP client for our server (admin API, handler, health)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.asgi), base_url=PUBLIC_URL)

    async def run_robot(self, code: str, *, timeout: float = 10.0, **kwargs: Any) -> Workflow:
        """Start `code` on a deal and wait until the portal closed the activity."""
        wf = await self.sim.start_robot(self.portal, code, **kwargs)
        if wf.use_subscription == "Y":
            await wf.closed(timeout=timeout)
        await self.until_idle(timeout)
        return wf

    async def until_idle(self, timeout: float = 10.0) -> None:
        """Wait until nothing is queued, running or owed to a portal, and no failed run has a retry that
        falls due before `timeout` runs out (a retry due later is left waiting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # one read, so a run that fails (and is due again) or is claimed between two reads is never missed
            with self.svc.db.read() as s:
                rows = s.execute(
                    select(InvocationRow.state, InvocationRow.run_after, InvocationRow.deliver_after)
                ).all()
            until = time.time() + (deadline - time.monotonic())  # the deadline in wall-clock time
            busy = any(st in (QUEUED, RUNNING) or owed is not None for st, _, owed in rows)
            retry_soon = any(st == FAILED and run_after <= until for st, run_after, _ in rows)
            if not busy and not retry_soon:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("the server did not become idle")
