"""Recovery after a crash over real processes: heartbeats, and leases taken over within seconds.

A worker killed with SIGKILL holds leases (60 s for a run). Its restart takes over the leases of
its previous incarnation at start-up; a live worker takes over those of a process whose heartbeat
stopped. The figures printed here are quoted in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from b24robots.store.processes import Processes
from b24robots.testing import PortalSimulator
from b24robots.testing.app_fixtures import RobotHarness
from tests.proc_robots import router
from tests.processes import served_sim, start_worker, stop, wait_for

__all__ = ["served_sim"]

FAST_BEAT = {"B24R_HEARTBEAT_SECONDS": "0.5", "B24R_PROCESS_STALE_SECONDS": "3"}


def _started(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


async def test_after_kill_9_and_restart_a_200_call_backlog_drains_within_20_s(
    served_sim: PortalSimulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    marker = tmp_path / "started"
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        workflows = [await h.sim.start_robot(h.portal, "p.sleepy") for _ in range(200)]
        first = await start_worker(h, db_url, tmp_path, B24R_TEST_MARKER=str(marker), B24R_TEST_SLEEP="60")
        try:
            await wait_for(lambda: _started(marker) >= 8, 30)  # all 8 slots busy, every run leased for 60 s
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        finally:
            stop(first)
        leased = [i for i in h.svc.journal.recent(limit=500) if i.state == "running"]
        assert len(leased) == 8 and all(i.attempts == 1 for i in leased)
        assert [p.pid for p in Processes(h.svc.db).all()] == [first.pid]  # it died without a word
        restarted = time.monotonic()
        second = await start_worker(h, db_url, tmp_path, B24R_TEST_SLEEP="0.05", B24R_WORKERS="16")
        try:
            await asyncio.gather(*(wf.closed(timeout=60) for wf in workflows))
            await wait_for(lambda: all(i.state == "delivered" for i in h.svc.journal.recent(limit=500)), 30)
            drained = time.monotonic() - restarted
            assert [p.pid for p in Processes(h.svc.db).all()] == [second.pid]  # the dead one is gone
        finally:
            stop(second)
        print(f"\n200-call backlog after kill -9: drained {drained:.1f} s after the restart (target 20 s)")
        assert drained < 20.0
        rows = h.svc.journal.recent(limit=500)
        assert sorted(i.attempts for i in rows if i.id in {x.id for x in leased}) == [2] * 8
        assert all(wf.closed_by == "event" and wf.ignored_events == 0 for wf in workflows)
        assert {str(wf.return_values["pid"]) for wf in workflows} == {str(second.pid)}
        assert Processes(h.svc.db).all() == []  # SIGTERM: the process removed itself


async def test_a_live_worker_takes_over_the_leases_of_one_whose_heartbeat_stopped(
    served_sim: PortalSimulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    marker = tmp_path / "started"
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        wf = await h.sim.start_robot(h.portal, "p.sleepy")
        doomed = await start_worker(
            h, db_url, tmp_path, B24R_TEST_MARKER=str(marker), B24R_TEST_SLEEP="60", B24R_WORKER_NAME="a", **FAST_BEAT
        )
        live = None
        try:
            await wait_for(lambda: _started(marker) == 1, 30)
            live = await start_worker(h, db_url, tmp_path, B24R_TEST_SLEEP="0.05", B24R_WORKER_NAME="b", **FAST_BEAT)
            await wait_for(lambda: len(Processes(h.svc.db).all()) == 2, 30)
            # the other worker is alive and beating: its lease is left alone
            await asyncio.sleep(4.0)
            assert h.svc.journal.recent()[0].state == "running" and h.svc.journal.recent()[0].attempts == 1
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait()
            killed = time.monotonic()
            await wf.closed(timeout=30)
            took = time.monotonic() - killed
        finally:
            stop(doomed)
            if live is not None:
                stop(live)
        print(f"\nlease of a killed worker taken over by a live one: answered {took:.1f} s after the kill (stale 3 s)")
        assert took < 3.0 + 5.0  # stale limit, one heartbeat, the run and a batch; the lease is 60 s
        inv = h.svc.journal.recent()[0]
        assert inv.attempts == 2 and str(wf.return_values["pid"]) == str(live.pid)
