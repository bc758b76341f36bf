"""Recovery of `b24robots serve` and of a delivery batch after kill -9, over real processes.

- A server killed with SIGKILL in the middle of a 200-call run is restarted; the backlog drains
  within 20 s of the restart (issue 15, item 4): the restart takes over its previous incarnation's
  leases at start-up (jobs/liveness.py) instead of waiting out their 60 s.
- A kill while a delivery batch is in flight repeats that batch after the restart, and only that
  batch: every other answer reaches the portal once. The repeat is harmless: the portal ignores a
  second answer for an activity that already closed (bizproc `classes/general/restactivity.php`
  ::onExternalEvent closes the activity on the first event; `lib/restservice.php::sendEvent` answers
  true either way), which the simulator mirrors (`PortalSimulator.apply_event`).

The figures printed here are quoted in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from sqlalchemy import select

from b24robots.store.models import InvocationRow
from b24robots.testing import PortalSimulator
from b24robots.testing.app_fixtures import RobotHarness
from tests.proc_robots import router
from tests.processes import served_sim, start_serve, start_worker, stop, wait_for

__all__ = ["served_sim"]


def _started(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


async def test_after_kill_9_of_serve_a_200_call_backlog_drains_within_20_s_of_the_restart(
    served_sim: PortalSimulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    marker = tmp_path / "started"
    serve_dir = tmp_path / "serve"  # the server's own data dir: its incarnation across the restart
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        workflows = [await h.sim.start_robot(h.portal, "p.sleepy") for _ in range(200)]
        first = await start_serve(h, db_url, serve_dir, B24R_TEST_MARKER=str(marker), B24R_TEST_SLEEP="60")
        try:
            await wait_for(lambda: _started(marker) >= 8, 60)  # all 8 slots busy, every run leased for 60 s
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        finally:
            stop(first)
        leased = [i for i in h.svc.journal.recent(limit=500) if i.state == "running"]
        assert len(leased) == 8 and all(i.attempts == 1 for i in leased)
        restarted = time.monotonic()
        second = await start_serve(h, db_url, serve_dir, B24R_TEST_SLEEP="0.05", B24R_WORKERS="16")
        try:
            await asyncio.gather(*(wf.closed(timeout=60) for wf in workflows))
            await wait_for(lambda: all(i.state == "delivered" for i in h.svc.journal.recent(limit=500)), 30)
            drained = time.monotonic() - restarted
        finally:
            stop(second)
        print(f"\nserve killed -9 with a 200-call run: drained {drained:.1f} s after the restart (target 20 s)")
        assert drained < 20.0
        rows = h.svc.journal.recent(limit=500)
        assert sorted(i.attempts for i in rows if i.id in {x.id for x in leased}) == [2] * 8
        assert all(wf.closed_by == "event" and wf.answers_received == 1 for wf in workflows)
        assert second.returncode == 0


async def test_a_kill_during_an_in_flight_batch_repeats_that_batch_and_no_other_answer(
    served_sim: PortalSimulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        # steps follow the robot: the instance lives on, so a repeated answer reaches it (and is ignored)
        workflows = [await h.sim.start_robot(h.portal, "p.quick", keep_running=True) for _ in range(60)]
        # the first batch stalls on the portal's side: it is executed 6 s after it arrived
        stall = served_sim.faults.delay(6.0, count=1, method="batch")
        first = await start_worker(h, db_url, tmp_path)
        try:
            await wait_for(lambda: stall not in served_sim.faults.rules, 30)  # the batch has arrived
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            killed_at = time.monotonic()
        finally:
            stop(first)
        with h.svc.db.read() as s:  # the answers of the batch in flight still hold its delivery lease
            in_flight = set(
                s.scalars(
                    select(InvocationRow.event_token).where(
                        InvocationRow.state == "answered", InvocationRow.lease_owner.is_not(None)
                    )
                )
            )
        assert in_flight, "a batch was in flight when the process was killed"
        second = await start_worker(h, db_url, tmp_path)
        try:
            await asyncio.gather(*(wf.closed(timeout=60) for wf in workflows))
            await wait_for(lambda: all(i.state == "delivered" for i in h.svc.journal.recent(limit=100)), 30)
            # the stalled batch is executed by the portal after all (the connection was cut, the request not)
            await wait_for(lambda: time.monotonic() - killed_at > 6.5, 10)
        finally:
            stop(second)
        repeated = [wf for wf in workflows if wf.event_token in in_flight]
        others = [wf for wf in workflows if wf.event_token not in in_flight]
        print(
            f"\nkill -9 during a batch of {len(repeated)} answers: event.send per answer"
            f" {sorted({wf.answers_received for wf in repeated})} for that batch,"
            f" {sorted({wf.answers_received for wf in others})} for the other {len(others)}"
        )
        assert len(repeated) == len(in_flight)
        assert all(wf.answers_received == 2 for wf in repeated), "the batch in flight was sent again, once"
        assert all(wf.answers_received == 1 for wf in others), "no other answer was repeated"
        assert all(wf.closed_by == "event" for wf in workflows)
        assert all(wf.ignored_events <= 2 for wf in repeated)  # the repeat's probe and answer, ignored
