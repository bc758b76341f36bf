"""Batched delivery under the portal's rate limit, and answers to a locked workflow."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from b24robots import Int, Params, Router
from b24robots.errors import MethodError
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


async def test_backlog_of_500_answers_goes_out_in_about_twenty_batches(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        svc = h.svc
        workflows = [await h.sim.start_robot(h.portal, "d.fast", wait_delivery=True) for _ in range(500)]
        # answer all of them first: a backlog of owed answers
        worker = Worker(svc.journal, svc.installations, svc.runner, svc.rest, Wakeup(), concurrency=16, poll=0.05)
        task = asyncio.create_task(worker.run())
        for _ in range(400):
            if sum(1 for i in svc.journal.recent(limit=1000) if i.state == "answered") == 500:
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
        # two commands per answer (the activity.log probe, then event.send), 50 commands per batch
        assert 20 <= len(batches) <= 21, len(batches)
        assert not [c for c in portal_calls if c.status == 503]
        assert all(wf.closed_by == "event" and str(wf.return_values["n"]) == "1" for wf in workflows)
        assert {i.state for i in svc.journal.recent(limit=1000)} == {"delivered"}


async def test_a_locked_workflow_still_gets_its_answer_exactly_once(tmp_path: Path) -> None:
    """bizproc.event.send answers true and drops the answer while the instance is locked; activity.log
    reports the lock as "423" (bizproc lib/restservice.php sendEvent / writeActivityLog,
    classes/general/workflowpersister.php::retrieveWorkflow). The sender probes first and comes back."""
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        svc = h.svc
        member_id = h.portal.member_id
        wf = await h.sim.start_robot(h.portal, "d.fast", wait_delivery=True)
        h.sim.lock_workflow(wf, 1.5)
        # what the portal does to a bare answer while locked: true, and the answer is gone
        assert await svc.rest.call(member_id, "bizproc.event.send", {"event_token": wf.event_token}) is True
        for _ in range(200):  # the portal's background job has dropped it
            if wf.lost_to_lock:
                break
            await asyncio.sleep(0.01)
        assert wf.lost_to_lock == 1 and not wf.is_closed
        with pytest.raises(MethodError) as err:
            await svc.rest.call(member_id, "bizproc.activity.log", {"event_token": wf.event_token, "log_message": "x"})
        assert err.value.code == "423"
        wf.lost_to_lock = 0

        worker = Worker(svc.journal, svc.installations, svc.runner, svc.rest, Wakeup(), poll=0.05)
        wtask = asyncio.create_task(worker.run())
        for _ in range(200):
            if [i.state for i in svc.journal.recent(limit=10)] == ["answered"]:
                break
            await asyncio.sleep(0.05)
        await worker.stop()
        await wtask
        h.sim.lock_workflow(wf, 1.0)  # locked again when the sender comes
        calls_before = len(h.sim.calls)
        sender = Sender(svc.journal, svc.installations, svc.rest, Wakeup(), poll=0.05)
        stask = asyncio.create_task(sender.run())
        started = time.monotonic()
        await wf.closed(timeout=15)
        waited = time.monotonic() - started
        await h.until_idle()
        await asyncio.sleep(0.3)
        await sender.stop()
        await stask

        assert wf.closed_by == "event" and str(wf.return_values["n"]) == "1"
        assert wf.lost_to_lock == 0  # no answer was sent into the lock
        assert waited >= 1.0  # it came only after the lock window
        batches = [c for c in list(h.sim.calls)[calls_before:] if c.method == "batch"]
        assert len(batches) == 2, batches  # the probed one that stopped at 423, then the answer
        (inv,) = svc.journal.recent(limit=10)
        assert inv.state == "delivered"
        assert inv.deliver_attempts == 1  # the lock did not count as a failed attempt
