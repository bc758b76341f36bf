"""Batched delivery under the portal's rate limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from b24robots import Int, Params, Router
from b24robots.jobs.sender import Sender
from b24robots.jobs.wakeup import Wakeup
from b24robots.jobs.worker import Worker
from b24robots.testing.app_fixtures import RobotHarness

router = Router()


class Out(Params):
    n = Int("N")


@router.robot("d.fast", name="Fast", outputs=Out)
def fast() -> Out:
    return Out(n=1)


async def test_backlog_of_500_answers_goes_out_in_about_ten_batches(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        svc = h.svc
        workflows = [await h.sim.start_robot(h.portal, "d.fast", wait_delivery=True) for _ in range(500)]
        # answer all of them first: a backlog of owed answers
        worker = Worker(svc.journal, svc.installations, svc.runner, svc.rest, Wakeup(), concurrency=16, poll=0.05)
        task = asyncio.create_task(worker.run())
        for _ in range(400):
            if sum(1 for i in svc.journal.list(limit=1000) if i.state == "answered") == 500:
                break
            await asyncio.sleep(0.05)
        await worker.stop()
        await task
        calls_before = len(h.sim.calls)
        sender = Sender(svc.journal, svc.installations, svc.rest, Wakeup(), poll=0.05)
        stask = asyncio.create_task(sender.run())
        await asyncio.gather(*(wf.closed(timeout=30) for wf in workflows))
        await h.until_idle()
        await sender.stop()
        await stask
        portal_calls = list(h.sim.calls)[calls_before:]
        batches = [c for c in portal_calls if c.method == "batch"]
        assert 10 <= len(batches) <= 11, len(batches)
        assert not [c for c in portal_calls if c.status == 503]
        assert all(wf.closed_by == "event" and str(wf.return_values["n"]) == "1" for wf in workflows)
        assert {i.state for i in svc.journal.list(limit=1000)} == {"delivered"}
