"""Worker processes: crash recovery (kill -9), several workers sharing one PostgreSQL queue, and the
run-as user's token of a call accepted by one process used by the worker process that runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from b24robots.store.models import InvocationRow
from b24robots.testing import PortalSimulator
from b24robots.testing.app_fixtures import RobotHarness
from tests.conftest import new_pg_database
from tests.proc_robots import router
from tests.processes import served_sim, start_worker, start_workers, stop, wait_for

__all__ = ["served_sim"]


async def test_kill_9_mid_run_is_delivered_exactly_once_after_restart(
    served_sim: PortalSimulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    marker = tmp_path / "started"
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        wf = await h.sim.start_robot(h.portal, "p.sleepy")
        first = await start_worker(h, db_url, tmp_path, B24R_TEST_MARKER=str(marker), B24R_TEST_SLEEP="30")
        try:
            await wait_for(marker.exists, 20)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        finally:
            stop(first)
        inv = h.svc.journal.recent()[0]
        assert inv.state == "running" and inv.attempts == 1  # the lease is still held by the dead worker
        # make the dead worker's lease expire now instead of in a minute
        from b24robots.store.models import InvocationRow

        with h.svc.db.write() as s:
            s.get(InvocationRow, inv.id).lease_expires_at = time.time() - 1  # type: ignore[union-attr]
        second = await start_worker(h, db_url, tmp_path, B24R_TEST_SLEEP="0.1")
        try:
            await wf.closed(timeout=30)
            await wait_for(lambda: h.svc.journal.get(inv.id).state == "delivered", 20)
        finally:
            stop(second)
        inv = h.svc.journal.get(inv.id)
        assert inv.attempts == 2 and inv.deliver_attempts == 1
        assert wf.closed_by == "event" and wf.ignored_events == 0
        assert str(wf.return_values["pid"]) == str(second.pid)


@pytest.mark.postgres
async def test_two_worker_processes_on_postgresql_deliver_each_of_1000_once(
    served_sim: PortalSimulator,
    tmp_path: Path,
    pg_server,
    pg_template,  # type: ignore[no-untyped-def]
) -> None:
    db_url = new_pg_database(pg_server, pg_template)
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        h.sim.portal(h.portal).bucket.burst = 1000  # this test is about exactly-once, not about the limit
        workflows = [await h.sim.start_robot(h.portal, "p.quick") for _ in range(1000)]
        workers = await start_workers(h, db_url, tmp_path, 2)
        try:
            await asyncio.gather(*(wf.closed(timeout=120) for wf in workflows))
            await wait_for(lambda: all(i.state == "delivered" for i in h.svc.journal.recent(limit=2000)), 60)
        finally:
            for w in workers:
                stop(w)
        rows = h.svc.journal.recent(limit=2000)
        assert len(rows) == 1000
        assert all(i.attempts == 1 and i.deliver_attempts == 1 for i in rows)
        assert all(wf.ignored_events == 0 and wf.closed_by == "event" for wf in workflows)
        pids = {str(wf.return_values["pid"]) for wf in workflows}
        assert pids == {str(w.pid) for w in workers}, "both workers took a share"


async def test_sigterm_gives_the_lease_back(served_sim: PortalSimulator, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    marker = tmp_path / "started"
    async with RobotHarness(router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False,
                            sandbox=False) as h:  # fmt: skip
        await h.install()
        await h.sim.start_robot(h.portal, "p.sleepy")
        proc = await start_worker(
            h, db_url, tmp_path, B24R_TEST_MARKER=str(marker), B24R_TEST_SLEEP="60", B24R_SHUTDOWN_GRACE="0.5"
        )
        try:
            await wait_for(marker.exists, 20)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)  # after the grace period the lease is released
        finally:
            stop(proc)
        assert proc.returncode == 0
        assert proc.stderr is not None
        assert "waiting up to 0.5 s (B24R_SHUTDOWN_GRACE) for 1 running robot" in proc.stderr.read().decode()
        inv = h.svc.journal.recent()[0]
        assert inv.state == "queued" and inv.attempts == 0  # ready for the next worker at once


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    return new_pg_database(request.getfixturevalue("pg_server"), request.getfixturevalue("pg_template"))


def _caller_columns(h: RobotHarness, inv_id: int) -> tuple[str | None, float | None]:
    with h.svc.db.read() as s:
        row = s.execute(
            select(InvocationRow.caller_token, InvocationRow.caller_expires_at).where(InvocationRow.id == inv_id)
        ).one()
    return row.caller_token, row.caller_expires_at


async def test_a_worker_process_calls_as_the_run_as_user_of_a_call_another_process_took(
    served_sim: PortalSimulator, tmp_path: Path, queue_url: str
) -> None:
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=queue_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        wf = await h.sim.start_robot(h.portal, "p.whoami", user_id=2)  # taken by this process only
        (inv,) = h.svc.journal.recent()
        (token,) = [t.token for t in h.sim.access_tokens.values() if t.user_id == 2]
        raw, _ = _caller_columns(h, inv.id)
        assert raw and token not in raw  # stored, never as plain text
        worker = await start_worker(h, queue_url, tmp_path)
        try:
            await wf.closed(timeout=30)
            await wait_for(lambda: h.svc.journal.get(inv.id).state == "delivered", 20)
        finally:
            stop(worker)
        assert wf.return_values["me"] == "2" and str(wf.return_values["pid"]) == str(worker.pid)
        (profile,) = [c for c in h.sim.calls if c.method == "profile"]
        assert profile.user_id == 2  # the worker process used the user's token, not the app's
        assert _caller_columns(h, inv.id) == (None, None)  # gone once the run was over
        assert worker.stderr is not None and token not in worker.stderr.read().decode()


async def test_a_worker_process_given_an_expired_token_runs_without_a_caller(
    served_sim: PortalSimulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'q.db'}"
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        wf = await h.sim.start_robot(h.portal, "p.whoami", user_id=2)
        (inv,) = h.svc.journal.recent()
        with h.svc.db.write() as s:  # as if the call had waited in the queue past its token's hour
            s.execute(update(InvocationRow).where(InvocationRow.id == inv.id).values(caller_expires_at=time.time() - 1))
        worker = await start_worker(h, db_url, tmp_path)
        try:
            await wf.closed(timeout=30)
        finally:
            stop(worker)
        assert wf.return_values["me"] == "none"  # ctx.rest_as_caller is None: the documented behaviour
        assert not [c for c in h.sim.calls if c.method == "profile"]
        assert _caller_columns(h, inv.id) == (None, None)
