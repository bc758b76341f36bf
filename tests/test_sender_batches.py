"""The sender's exact rules against the simulated portal: 25 answers (50 commands) fill one batch and
the next answer goes out at once in the next; a failed batch backs off; a refused event token is given
up after one attempt and the answers a halted batch never ran stay owed without an attempt spent; a
late answer is never sent; an answer whose workflow finished counts as delivered; the final log message
is cut to the portal's length."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from b24robots import Int, Params, Router
from b24robots.jobs.sender import Sender
from b24robots.jobs.wakeup import Wakeup
from b24robots.robots.triggers import Entity
from b24robots.robots.values import MAX_LOG_MESSAGE
from b24robots.store.journal import Invocation, NewCall, NewInvocation
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.testing.model import Workflow
from b24robots.testing.simulator import PortalSimulator

router = Router()


class Out(Params):
    n = Int("N")


router.trigger("s.paid", name="Paid")


@router.robot("s.fast", name="Fast", outputs=Out)
def fast() -> Out:
    return Out(n=1)


def harness(tmp_path: Path) -> RobotHarness:
    return RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False)


def answer_all(h: RobotHarness, *, log_message: str = "") -> None:
    """What a worker does, by hand: every queued call answered, its answer owed (in arrival order)."""
    j = h.svc.journal
    for inv in sorted(j.claim("W", 1000, lease=60), key=lambda i: i.id):
        assert j.finish(inv.id, "W", outputs={"n": "1"}, log=[], log_message=log_message)


async def started(h: RobotHarness, n: int) -> list[Workflow]:
    return [await h.sim.start_robot(h.portal, "s.fast", wait_delivery=True) for _ in range(n)]


def stored(h: RobotHarness, token: str, **over: object) -> int:
    """A call journaled as if the portal had sent it with `token` (e.g. one the portal never issued)."""
    inst = h.svc.installations.get(h.portal.member_id)
    fields: dict[str, object] = dict(
        event_token=token,
        installation_id=inst.id,
        robot_code="s.fast",
        origin="module",
        robot_version_id=None,
        workflow_id="wf",
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        use_subscription=True,
        timeout_duration=0,
        portal_ts=0,
        auth_user_id=1,
        properties={},
        inputs={},
    )
    fields.update(over)
    inv_id, _ = h.svc.journal.enqueue(NewInvocation(**fields))
    return inv_id


def batches(h: RobotHarness, since: int) -> int:
    return sum(1 for c in list(h.sim.calls)[since:] if c.method == "batch")


@asynccontextmanager
async def sending(h: RobotHarness, *, poll: float = 0.05) -> AsyncIterator[Sender]:
    svc = h.svc
    sender = Sender(svc.journal, svc.installations, svc.rest, Wakeup(), poll=poll)
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        await sender.stop()
        await task


async def until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true")
        await asyncio.sleep(0.02)


async def test_25_answers_are_one_batch_of_50_commands(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        workflows = await started(h, 25)
        answer_all(h)
        before = len(h.sim.calls)
        async with sending(h):
            await asyncio.gather(*(wf.closed(timeout=10) for wf in workflows))
        assert batches(h, before) == 1
        assert {i.state for i in h.svc.journal.recent()} == {"delivered"}


async def test_the_26th_answer_goes_out_in_the_next_batch_at_once(tmp_path: Path) -> None:
    """It was leased with the other 25 but did not fit: its lease is given back, and the sender does not
    wait for its poll interval (a minute here) to send the rest of a backlog."""
    async with harness(tmp_path) as h:
        await h.install()
        workflows = await started(h, 26)
        answer_all(h)
        before = len(h.sim.calls)
        async with sending(h, poll=60.0):
            await asyncio.gather(*(wf.closed(timeout=8) for wf in workflows))
        assert batches(h, before) == 2
        assert all(i.deliver_attempts == 1 for i in h.svc.journal.recent())


async def test_a_failed_batch_is_retried_after_a_backoff(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        (wf,) = await started(h, 1)
        answer_all(h)
        h.sim.faults.fail_next(1000, status=500, method="batch")  # beyond the REST client's own retries
        async with sending(h):
            await until(lambda: h.svc.journal.recent()[0].deliver_attempts == 1)
            failed_at = time.time()
            inv = h.svc.journal.recent()[0]
            h.sim.faults.clear()
            await asyncio.sleep(0.3)
            assert not wf.is_closed  # not sent again at once
        assert inv.state == "answered" and "delivery" in inv.error
        assert inv.deliver_after is not None and inv.deliver_after >= failed_at + 4.0  # 5 s for the first


async def test_a_refused_event_token_is_given_up_at_once_and_the_halted_rest_stays_owed(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        forged = stored(h, "not-a-token-this-portal-issued")
        (wf,) = await started(h, 1)
        answer_all(h)  # the forged one first: the halting batch stops at it
        async with sending(h):
            await wf.closed(timeout=10)
            await until(lambda: not any(i.owed for i in h.svc.journal.recent()))
        bad = h.svc.journal.get(forged)
        assert bad.state == "dead" and bad.deliver_attempts == 1 and "ACCESS_DENIED" in bad.error
        good = next(i for i in h.svc.journal.recent() if i.id != forged)
        # it was not run by the halted batch: delivered by the next one, that one attempt its only one
        assert good.state == "delivered" and good.deliver_attempts == 1
        assert wf.closed_by == "event" and str(wf.return_values["n"]) == "1"


async def test_an_answer_past_the_workflows_timeout_is_never_sent(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        (wf,) = await started(h, 1)
        late = stored(h, wf.event_token + "-late", timeout_duration=60, portal_ts=int(time.time()) - 120)
        j = h.svc.journal
        for inv in j.claim("W", 10, lease=60):
            if inv.id == late:
                j.finish(inv.id, "W", outputs={"n": "1"}, log=[])
        before = len(h.sim.calls)
        async with sending(h):
            await until(lambda: not j.get(late).owed)
        assert j.get(late).state == "dead" and "timeout passed" in j.get(late).error
        assert batches(h, before) == 0


async def test_an_answer_to_a_finished_workflow_counts_as_delivered(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        (wf,) = await started(h, 1)
        answer_all(h)
        # somebody else answered it first: the workflow finished and is gone
        member_id = h.portal.member_id
        await h.svc.rest.call(member_id, "bizproc.event.send", {"event_token": wf.event_token})
        await wf.closed(timeout=5)
        before = len(h.sim.calls)
        async with sending(h):
            await until(lambda: not h.svc.journal.recent()[0].owed)
        (inv,) = h.svc.journal.recent()
        assert inv.state == "delivered" and batches(h, before) == 1


async def test_the_final_log_message_is_cut_to_the_portals_length(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        (wf,) = await started(h, 1)
        answer_all(h, log_message="x" * (MAX_LOG_MESSAGE * 3))
        async with sending(h):
            await wf.closed(timeout=10)
        sent = [e.message for e in wf.log if e.message.startswith("xxx")]
        assert sent and all(len(m) == MAX_LOG_MESSAGE and m.endswith("…") for m in sent)


async def test_a_fire_at_a_missing_entity_is_given_up_at_once(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.install()
        inst = h.svc.installations.get(h.portal.member_id)
        call, _ = h.svc.journal.enqueue_call(
            NewCall(
                key="fire-1",
                installation_id=inst.id,
                method="crm.automation.trigger",
                params={"CODE": "t1", "OWNER_TYPE_ID": 2, "OWNER_ID": 999999},
                label="t1",
                origin="api",
                document_id=["crm", "CCrmDocumentDeal", "DEAL_999999"],
                check={"entityTypeId": 2, "id": 999999},
            )
        )
        async with sending(h):
            await until(lambda: not h.svc.journal.get(call.id).owed)
        gone = h.svc.journal.get(call.id)
        assert gone.state == "dead" and gone.deliver_attempts == 1 and "does not exist" in gone.error


async def test_a_fire_blocked_by_the_methods_operating_time_is_retried_not_given_up(tmp_path: Path) -> None:
    """OPERATION_TIME_LIMIT on the fire's command inside the batch (the method used up its operating
    time; the limiter counts a batch's inner calls, not the batch: rest `lib/engine/access/loadlimiter.php`,
    protocol §5.2) passes: the fire stays owed with a later retry, it is never dead."""
    sim = PortalSimulator(operating_time_limit=1.0, method_costs={"crm.automation.trigger.execute": 5.0})
    async with RobotHarness(router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
        await h.install()
        deal = int(h.portal.add_deal()["ID"])
        outbound, member = h.svc.outbound, h.portal.member_id
        async with sending(h):
            first = await outbound.fire_trigger(member, "s.paid", Entity(2, deal), origin="cli", key="one")
            await until(lambda: h.svc.journal.get(first.entry.id).state == "delivered")
            second = await outbound.fire_trigger(member, "s.paid", Entity(2, deal), origin="cli", key="two")
            await until(lambda: h.svc.journal.get(second.entry.id).deliver_attempts == 1)
        blocked = h.svc.journal.get(second.entry.id)
        assert blocked.state != "dead" and "OPERATION_TIME_LIMIT" in blocked.error
        assert blocked.deliver_after is not None and blocked.deliver_after > time.time()
        assert [f.owner_id for f in h.portal.trigger_firings] == [deal]  # the blocked one did not run


async def test_one_portal_is_drained_by_one_task_its_batches_one_after_another(tmp_path: Path) -> None:
    """51 answers owed to one portal are three batches sent in turn, never side by side: the portal's
    bucket and the order of its answers are kept by one drain per portal (each batch is answered 1 s
    late here, so three in turn take 3 s at least; side by side they would take about 1 s)."""
    async with harness(tmp_path) as h:
        await h.install()
        workflows = await started(h, 51)
        answer_all(h)
        h.sim.faults.delay(1.0, method="batch")
        before = len(h.sim.calls)
        begun = time.monotonic()
        async with sending(h, poll=0.02):
            await asyncio.gather(*(wf.closed(timeout=30) for wf in workflows))
        assert batches(h, before) == 3
        assert time.monotonic() - begun >= 3.0


async def test_portals_take_turns_and_a_drained_batch_needs_no_new_look(tmp_path: Path) -> None:
    """Twelve portals owe 26 answers each (two batches), four are served at once: every portal's first
    batch goes out before any portal's second (a portal just served goes behind all not served since).
    A portal whose batch left answers owed is served again from memory: the owed portals are looked up
    once for the 24 batches, not after each (the poll is far away, nothing new is announced)."""
    async with harness(tmp_path) as h:
        await h.install()
        portals = [h.sim.add_portal() for _ in range(12)]
        for portal in portals:
            await h.sim.install_app(h.app, portal)
        await h.svc.wait_syncs()
        workflows = [
            await h.sim.start_robot(portal, "s.fast", wait_delivery=True) for _ in range(26) for portal in portals
        ]
        answer_all(h)
        looks = 0
        owing = h.svc.journal.portals_owing

        def counted(*args: object, **kwargs: object) -> list[int]:
            nonlocal looks
            looks += 1
            return owing(*args, **kwargs)

        h.svc.journal.portals_owing = counted  # type: ignore[method-assign]
        before = len(h.sim.calls)
        svc = h.svc
        sender = Sender(svc.journal, svc.installations, svc.rest, Wakeup(), poll=30.0, concurrency=4)
        task = asyncio.create_task(sender.run())
        try:
            await asyncio.gather(*(wf.closed(timeout=60) for wf in workflows))
        finally:
            await sender.stop()
            await task
        order = [c.domain for c in list(h.sim.calls)[before:] if c.method == "batch"]
        assert len(order) == 24
        assert set(order[:12]) == {p.domain for p in portals}  # each portal's first batch, then the seconds
        assert set(order[12:]) == {p.domain for p in portals}
        assert looks == 1


def fires(h: RobotHarness, n: int) -> list[Invocation]:
    """`n` trigger fires at one new deal, owed as outbound calls of one command each (no entity check)."""
    inst = h.svc.installations.get(h.portal.member_id)
    deal = int(h.portal.add_deal()["ID"])
    call = dict(
        installation_id=inst.id,
        method="crm.automation.trigger.execute",
        params={"CODE": "s.paid", "OWNER_TYPE_ID": 2, "OWNER_ID": deal},
        label="s.paid",
        origin="api",
        document_id=["crm", "CCrmDocumentDeal", f"DEAL_{deal}"],
    )
    return [h.svc.journal.enqueue_call(NewCall(key=f"fire-{i}", **call))[0] for i in range(n)]


async def test_outbound_calls_of_one_command_fill_a_batch_of_50(tmp_path: Path) -> None:
    """An answer takes two commands, a fire without an entity check one: 60 such fires go out as a batch
    of 50 commands and one of 10 (the sender claims again for the room the first 25 left)."""
    async with harness(tmp_path) as h:
        await h.install()
        calls = fires(h, 60)
        before = len(h.sim.calls)
        async with sending(h):
            await until(lambda: all(h.svc.journal.get(c.id).state == "delivered" for c in calls))
        assert batches(h, before) == 2
        assert len(h.portal.trigger_firings) == 60


async def test_answers_that_do_not_fit_the_room_left_are_sent_next_at_once(tmp_path: Path) -> None:
    """25 one-command fires leave room for 25 commands; the second claim takes 20 answers (40 commands), of
    which 12 fit. The other 8 are given back at once and go out in the next batch, not after their lease
    (two minutes) or the poll (a minute here)."""
    async with harness(tmp_path) as h:
        await h.install()
        fires(h, 25)
        workflows = await started(h, 20)
        answer_all(h)
        before = len(h.sim.calls)
        async with sending(h, poll=60.0):
            await asyncio.gather(*(wf.closed(timeout=8) for wf in workflows))
        assert batches(h, before) == 2
        assert len(h.portal.trigger_firings) == 25
        assert {i.state for i in h.svc.journal.recent()} == {"delivered"}
