"""kill -9 of the server in the middle of a load run loses no acknowledged robot call."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
from bench.common import OurServer, capture_bodies, free_port, install, register_served_app
from bench.robots import MODULE_CODE, PROPERTIES
from bench.wrkload import split_body
from sqlalchemy import select

from b24robots.store.db import Database
from b24robots.store.models import InvocationRow
from b24robots.testing import PortalSimulator, SimulatorServer

CALLS, CONCURRENCY, KILL_AFTER = 600, 16, 150


@pytest.mark.slow
async def test_kill_9_mid_run_loses_no_acknowledged_call() -> None:
    sim = PortalSimulator()
    with SimulatorServer(sim):
        portal = sim.add_portal()
        port = free_port()
        app = register_served_app(sim, port, "kill test")
        server = OurServer(app, workers=False, port=port, oauth_url=sim.oauth_url)
        server.start()
        try:
            await install(sim, server.app, portal, [MODULE_CODE])
            head, tail = split_body((await capture_bodies(sim, portal, MODULE_CODE, 1, PROPERTIES))[0])
            acked: list[str] = []
            refused = 0
            todo = asyncio.Queue[int]()
            for i in range(CALLS):
                todo.put_nowait(i)

            async def client(http: httpx.AsyncClient) -> None:
                nonlocal refused
                while not todo.empty():
                    token = f"kill.{todo.get_nowait()}"
                    body = head + token.encode() + tail
                    try:
                        resp = await http.post(
                            "/b24/robot", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
                        )
                    except httpx.TransportError:
                        refused += 1  # no answer: the portal would not count it as acknowledged either
                        continue
                    if resp.status_code == 200 and resp.json()["status"] == "queued":
                        acked.append(token)
                    if len(acked) >= KILL_AFTER and server.proc is not None and server.proc.poll() is None:
                        os.kill(server.pid, signal.SIGKILL)

            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
                await asyncio.gather(*(client(http) for _ in range(CONCURRENCY)))
        finally:
            assert server.proc is not None
            server.proc.wait(10)
            server.proc = None
    assert server.database_url.startswith("sqlite")
    assert len(acked) >= KILL_AFTER and refused > 0  # killed in the middle, with calls in flight
    db = Database(server.database_url)
    try:
        with db.read() as s:
            stored = set(s.scalars(select(InvocationRow.event_token).where(InvocationRow.event_token.like("kill.%"))))
    finally:
        db.dispose()
    assert set(acked) <= stored
