"""Faults of the machine under a running `b24robots serve`: a disk that fills (the OS refuses every
file write of the process: RLIMIT_FSIZE set from outside with prlimit), then frees again; SIGTERM."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import time
from pathlib import Path

import httpx

from b24robots.testing import PortalSimulator
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.testing.model import Workflow
from tests.proc_robots import router
from tests.processes import free_port, served_sim, start_serve, start_worker, stop, wait_for

__all__ = ["served_sim"]

TOKEN = "health-and-metrics-token-1"


class ToPort(httpx.AsyncBaseTransport):
    """Sends what the simulator posts to our public URL to the served process on a local port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return await self.inner.handle_async_request(request)


async def delivered(wf: Workflow, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while wf.delivery is None:
        assert time.monotonic() < deadline, "the portal never posted the robot call"
        await asyncio.sleep(0.02)
    assert wf.delivery.status_code is not None, wf.delivery.error
    return wf.delivery.status_code


async def test_a_full_disk_answers_503_with_the_reason_and_recovers_by_itself(
    served_sim: PortalSimulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    port = free_port()
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        tokens = {"B24R_HEALTH_TOKEN": TOKEN, "B24R_METRICS_TOKEN": TOKEN}
        proc = await start_serve(h, db_url, tmp_path, "--no-workers", port=port, **tokens)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as web:
                assert (await web.get("/healthz")).status_code == 200
                served_sim.handler_transport = ToPort(port)
                await served_sim.aclose()  # the next delivery opens a client with the new transport
                assert await delivered(await served_sim.start_robot(h.portal, "p.quick")) == 200

                _, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
                resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (0, hard))  # the disk is full
                refused = [await served_sim.start_robot(h.portal, "p.quick") for _ in range(5)]
                for wf in refused:
                    assert await delivered(wf) == 503
                    body = json.loads(wf.delivery.response_text)  # type: ignore[union-attr]
                    assert body["error"] == "unavailable" and "cannot be written" in body["reason"]
                health = await web.get("/healthz", headers=auth)
                assert health.status_code == 503 and health.json()["checks"]["database"] is False
                assert health.json()["database_error"]
                metrics = (await web.get("/metrics", headers=auth)).text
                assert "b24robots_database_up 0.0" in metrics

                resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))  # space is back
                assert await delivered(await served_sim.start_robot(h.portal, "p.quick")) == 200
                health = await web.get("/healthz", headers=auth)
                assert health.status_code == 200 and health.json()["checks"]["database"] is True
                assert "b24robots_database_up 1.0" in (await web.get("/metrics", headers=auth)).text
            # what was accepted is kept; what was refused was never stored
            rows = h.svc.journal.recent(limit=100)
            assert len(rows) == 2 and {r.state for r in rows} == {"queued"}

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, "a clean SIGTERM exits 0"
        finally:
            stop(proc)
        assert proc.stderr is not None
        lines = [line for line in proc.stderr.read().decode().splitlines() if line.strip()]
        assert lines, "the refused writes were logged"
        for line in lines:  # every line in our JSON format
            entry = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= set(entry)


async def test_bookkeeping_writes_that_fail_after_the_work_are_retried_in_place(
    served_sim: PortalSimulator, tmp_path: Path
) -> None:
    """The database refuses writes while a robot runs and while its answer is in flight: the outcome
    and the delivery are recorded once it takes writes again; no rerun, no second send."""

    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    marker = tmp_path / "started"
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        worker = await start_worker(h, db_url, tmp_path, B24R_TEST_MARKER=str(marker), B24R_TEST_SLEEP="1")
        _, hard = resource.prlimit(worker.pid, resource.RLIMIT_FSIZE)
        try:
            # 1. the result of a run cannot be recorded at first
            wf = await served_sim.start_robot(h.portal, "p.sleepy")
            await wait_for(marker.exists, 20)
            resource.prlimit(worker.pid, resource.RLIMIT_FSIZE, (0, hard))
            await asyncio.sleep(3)  # the robot is done after 1 s; recording it fails meanwhile
            assert wf.closed_by is None and h.svc.journal.recent()[0].state == "running"
            resource.prlimit(worker.pid, resource.RLIMIT_FSIZE, (hard, hard))
            await wf.closed(timeout=20)
            (first,) = h.svc.journal.recent()
            await wait_for(lambda: h.svc.journal.get(first.id).state == "delivered", 20)

            # 2. the portal takes a batch, then marking it delivered fails at first
            slow = served_sim.faults.delay(2.0, count=1, method="batch")
            wf2 = await served_sim.start_robot(h.portal, "p.quick")
            second = max(h.svc.journal.recent(), key=lambda i: i.id)
            # the batch is on its way once the portal took it (the rule is spent on arrival, and
            # the answer comes 2 s late); writes stop only then, else the sender could not even
            # claim the batch and the portal would never see it
            await wait_for(lambda: slow not in served_sim.faults.rules, 20)
            resource.prlimit(worker.pid, resource.RLIMIT_FSIZE, (0, hard))
            await wf2.closed(timeout=20)
            await asyncio.sleep(1.5)
            assert h.svc.journal.get(second.id).state == "answered"  # not marked yet
            resource.prlimit(worker.pid, resource.RLIMIT_FSIZE, (hard, hard))
            # marked within seconds, not when the 120 s delivery lease lapses
            await wait_for(lambda: h.svc.journal.get(second.id).state == "delivered", 10)
        finally:
            resource.prlimit(worker.pid, resource.RLIMIT_FSIZE, (hard, hard))
            stop(worker)
        assert worker.returncode == 0, "the worker survived"
        one, two = h.svc.journal.get(first.id), h.svc.journal.get(second.id)
        assert (one.attempts, one.deliver_attempts) == (1, 1), "the robot ran once"
        assert (two.attempts, two.deliver_attempts) == (1, 1), "the batch was sent once"
        assert wf.closed_by == "event" and wf.ignored_events == 0
        assert wf2.closed_by == "event" and wf2.ignored_events == 0
        assert worker.stderr is not None
        log = worker.stderr.read().decode()
        assert f"recording the outcome of invocation {first.id} failed" in log
        assert "answers delivered failed" in log
