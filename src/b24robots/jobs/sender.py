"""The sender: answers owed to portals, packed into `batch` calls of `bizproc.event.send`.

Per portal it takes up to 50 owed answers and sends them in one `batch` request under the portal's
shared leaky bucket (the REST client waits for a slot). Each answer is a `bizproc.event.send` with
RETURN_VALUES and the final LOG_MESSAGE, preceded by one `bizproc.activity.log` carrying the robot's
`ctx.log` lines (or a short probe line when it wrote none); a batch holds at most 50 commands and
halts at the first error.
The `activity.log` goes first because `bizproc.event.send` answers true and applies the answer
after the response, dropping it silently when the workflow instance is locked by another hit,
while `activity.log` runs at once and reports the lock as error "423" (bizproc lib/restservice.php
sendEvent / writeActivityLog; classes/general/workflowpersister.php::retrieveWorkflow). On 423 the
batch stops before the answer, which is sent again after LOCKED_WORKFLOW_DELAY without counting an
attempt; on 404 (the workflow finished) the answer counts as delivered, as `event.send` would have
dropped it; commands the halted batch never ran stay owed for the next batch.
`bizproc.event.send` is idempotent on the portal (the first answer wins), so failures are simply
retried later (backoff from `b24robots.policy`) until the workflow's own deadline passes or, for a
workflow that waits without one, `give_up_seconds` (B24R_DELIVERY_GIVE_UP_DAYS) after the answer
became owed. Outbound calls in the journal (trigger fires, workflow starts) ride in the same
batches as one command each; one the portal refused for good (an unknown trigger, a wrong entity)
is given up at once, while a refused batch, the rate limit or a server error is retried.
Up to `concurrency` portals (B24R_DELIVERY_CONCURRENCY) are served at once, enough that each waits only
for its own bucket; beyond that, round-robin: a portal just served goes behind every owed portal not
served since, the longest-waiting first, so none starves. The owed portals are looked up when answers
are announced (the worker's wake-up, NOTIFY on PostgreSQL) or the poll passes, not after every batch: a
portal whose batch left answers owed is served again from memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from b24robots.errors import (
    AccessDenied,
    B24RobotsError,
    MethodError,
    OperationTimeLimit,
    QueryLimitExceeded,
    RestError,
    ServerError,
    TransportError,
)
from b24robots.policy import (
    DAY,
    DEFAULT_GIVE_UP_DAYS,
    FAILED_COMMAND_DELAY,
    LOCKED_WORKFLOW_DELAY,
    delivery_backoff,
)
from b24robots.rest.client import RestClient
from b24robots.robots.values import short
from b24robots.store.installations import Installations
from b24robots.store.journal import CALL, Invocation, Journal

from .bookkeeping import persist
from .wakeup import Wakeup
from .worker import owner_id

log = logging.getLogger("b24robots.sender")

BATCH_MAX = 50
OWING_LOOK = 10_000
"""Owed portals read in one look: all of them in practice, so round-robin can reach every one."""
PROBE_MESSAGE = "Answer ready"
"""The `bizproc.activity.log` line sent before an answer when the robot logged nothing itself."""
LOCKED, GONE = "423", "404"
"""The engine's codes for a locked and a missing workflow instance, as `bizproc.activity.log` reports them."""


def commands_for(inv: Invocation, token: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """The batch commands that answer one invocation, keyed `<id>.log` (the probe) then `<id>` (the answer).

    `bizproc.activity.log` goes first with the robot's `ctx.log` lines (one call, lines joined) or
    PROBE_MESSAGE: it fails synchronously on a locked or gone workflow, so a halting batch never
    sends an answer the portal would drop. `bizproc.event.send` carries RETURN_VALUES and the final message.
    """
    if inv.kind == CALL:  # an outbound call: the stored method and parameters, as they are
        call = {str(inv.id): (str(inv.properties["method"]), dict(inv.properties.get("params") or {}))}
        check = inv.properties.get("check")
        # an entity not checked when the call was accepted: ask first, in the same batch (jobs/outbound.py)
        return ({f"{inv.id}.check": ("crm.item.get", dict(check))} if check else {}) | call
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    lines = [line for line in inv.log if line]
    probe = short("\n".join(lines)) if lines else PROBE_MESSAGE
    out[f"{inv.id}.log"] = ("bizproc.activity.log", {"event_token": token, "log_message": probe})
    params: dict[str, Any] = {"event_token": token, "return_values": dict(inv.outputs or {})}
    if inv.log_message:
        params["log_message"] = short(inv.log_message)
    out[str(inv.id)] = ("bizproc.event.send", params)
    return out


class Sender:
    def __init__(
        self,
        journal: Journal,
        installations: Installations,
        rest: RestClient,
        wakeup: Wakeup,
        *,
        concurrency: int = 128,
        lease: float = 120.0,
        poll: float = 5.0,
        give_up_seconds: float = DEFAULT_GIVE_UP_DAYS * DAY,
        on_delivered: Callable[[int, list[Invocation]], None] | None = None,
        process: str | None = None,
    ) -> None:
        self.process = process  # this process's id in the processes table (its leases name it)
        self.journal = journal
        self.installations = installations
        self.rest = rest
        self.wakeup = wakeup
        self.concurrency = concurrency
        self.lease = lease
        self.poll = poll
        self.give_up_seconds = give_up_seconds
        self.owner = owner_id("sender")
        self.on_delivered = on_delivered
        self.last_loop = 0.0
        self.batches = 0
        self._stopping = asyncio.Event()
        self._busy: set[int] = set()
        self._served: dict[int, int] = {}  # installation id -> when its last batch started (a counter)
        self._round = 0
        self._again: list[int] = []  # portals whose last batch left answers owed, in the order they finished
        self._freed = asyncio.Event()  # a portal's batch is over: its slot is free

    @property
    def alive(self) -> bool:
        return not self._stopping.is_set() and time.time() - self.last_loop < max(30.0, self.poll * 3)

    async def run(self) -> None:
        self.wakeup.bind(asyncio.get_running_loop())
        self._freed = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        known: list[int] = []  # owed portals from the last look, the longest-waiting first, not started since
        look = True
        next_poll = 0.0
        while not self._stopping.is_set():
            self.last_loop = time.time()
            # a look is a GROUP BY over every owed answer: taken when something new may be owed (a wake-up,
            # or the poll: deferred answers come due, leases lapse) and a slot is free, not after every batch
            if (look or time.monotonic() >= next_poll) and len(self._busy) < self.concurrency:
                look = False
                next_poll = time.monotonic() + self.poll
                try:
                    known = await asyncio.to_thread(self.journal.portals_owing, limit=OWING_LOOK)
                except Exception:
                    log.exception("looking for owed answers failed")
                    known = []
            again, self._again = self._again, []
            candidates = list(dict.fromkeys([*known, *again]))
            # round-robin: a portal just served goes behind every owed portal not served since; among
            # equals, the one whose oldest answer waits longest first (portals_owing's order)
            order = {pid: i for i, pid in enumerate(candidates)}
            candidates.sort(key=lambda pid: (self._served.get(pid, 0), order[pid]))
            waiting: list[int] = []
            for installation_id in candidates:
                if installation_id in self._busy or len(self._busy) >= self.concurrency:
                    waiting.append(installation_id)
                    continue
                self._busy.add(installation_id)
                self._round += 1
                self._served[installation_id] = self._round
                task = asyncio.create_task(self._drain(installation_id))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            known = waiting  # a started portal comes back through `_again` when its batch left answers owed
            stop = asyncio.ensure_future(self._stopping.wait())
            wake = asyncio.ensure_future(self.wakeup.wait(max(0.0, next_poll - time.monotonic())))
            freed = asyncio.ensure_future(self._freed.wait())
            done, _ = await asyncio.wait({stop, wake, freed}, return_when=asyncio.FIRST_COMPLETED)
            for f in (stop, wake, freed):
                if not f.done():
                    f.cancel()
            self._freed.clear()
            look = look or wake in done  # announced answers (or the poll's time): look again
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    async def stop(self) -> None:
        self._stopping.set()

    async def _drain(self, installation_id: int) -> None:
        """Send one batch for this portal (the loop comes back for the next one)."""
        more = False
        try:
            more = await self._send_batch(installation_id)
        except Exception:
            log.exception("delivering answers for installation %s failed", installation_id)
        finally:
            self._busy.discard(installation_id)
            if more:
                self._again.append(installation_id)
            self._freed.set()

    async def _claim(self, installation_id: int, limit: int) -> list[Invocation]:
        return await asyncio.to_thread(
            self.journal.claim_deliveries,
            installation_id,
            self.owner,
            limit=limit,
            lease=self.lease,
            process=self.process,
        )

    async def _send_batch(self, installation_id: int) -> bool:
        """One batch for this portal; True when answers are still owed to it at once (a full claim, answers
        that did not fit or that a halted batch never ran), so the loop serves it again without a look."""
        # an answer is two commands (the probe and the answer), an outbound call one or two: a first claim
        # that always fits, then one for the room outbound calls left (what then does not fit is unleased)
        invs = await self._claim(installation_id, BATCH_MAX // 2)
        if not invs:
            return False
        more = len(invs) >= BATCH_MAX // 2
        room = BATCH_MAX - sum(len(commands_for(i, self.journal.original_token(i))) for i in invs)
        if more and room >= 2:
            extra = await self._claim(installation_id, room)
            more = len(extra) >= room
            invs += extra
        now = time.time()
        late = {i.id for i in invs if i.too_late(now)}
        if late:
            await persist("expiring late answers", self.journal.expire_late, sorted(late), self.owner)
        due = [i for i in invs if i.id not in late]
        if not due:
            return more
        portal = await asyncio.to_thread(self.installations.by_id, installation_id)
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        packed: list[Invocation] = []
        for inv in due:
            cmds = commands_for(inv, self.journal.original_token(inv))
            if len(commands) + len(cmds) > BATCH_MAX:
                break
            commands.update(cmds)
            packed.append(inv)
        if len(packed) < len(due):  # no room in this batch: they stay owed for the next one
            more = True
            await persist("returning leases", self.journal.unlease, [i.id for i in due[len(packed) :]], self.owner)
        due = packed
        try:
            result = await self.rest.batch(portal.member_id, commands, halt=True)
        except (RestError, B24RobotsError) as exc:
            delay = delivery_backoff(due[0].deliver_attempts)
            log.warning("batch of %d answers to %s failed: %s; retry in %.0f s", len(due), portal.domain, exc, delay)
            await persist(
                "recording a failed batch",
                self.journal.delivery_failed,
                [i.id for i in due],
                self.owner,
                error=str(exc),
                delay=delay,
                give_up_seconds=self.give_up_seconds,
            )
            return False
        self.batches += 1
        failed: dict[int, Exception] = {}
        locked: list[int] = []
        unrun: list[int] = []
        gone: set[int] = set()  # the workflow instance no longer exists: nothing to answer
        for inv in due:
            check = result.errors.get(f"{inv.id}.check")
            probe = result.errors.get(f"{inv.id}.log")
            if check is not None:
                if isinstance(check, MethodError) and check.code == "NOT_FOUND":
                    # the fire itself would change nothing (the portal answers true for a missing entity)
                    failed[inv.id] = MethodError("NOT_FOUND", f"{inv.document_id[2]} does not exist on {portal.domain}")
                else:  # the check could not run: the call did not either; try again later
                    failed[inv.id] = ServerError(
                        check.code, check.description, method=check.method, portal=check.portal
                    )
            elif isinstance(probe, MethodError) and probe.code == LOCKED:
                locked.append(inv.id)
            elif isinstance(probe, MethodError) and probe.code == GONE:
                # the workflow finished (its row is deleted): event.send would answer true and drop the
                # answer, so it counts as delivered, as it did before the probe
                gone.add(inv.id)
            elif probe is not None:
                failed[inv.id] = probe
            elif str(inv.id) in result.errors:
                failed[inv.id] = result.errors[str(inv.id)]
            elif str(inv.id) not in result.results:
                unrun.append(inv.id)  # the batch halted before it: still owed, no attempt spent
        if gone:
            log.info("%d answers to %s found their workflow finished: nothing to deliver", len(gone), portal.domain)
        if locked:
            log.info("%d answers to %s wait for a locked workflow", len(locked), portal.domain)
            await persist(
                "deferring answers to locked workflows",
                self.journal.delivery_deferred,
                locked,
                self.owner,
                delay=LOCKED_WORKFLOW_DELAY,
                reason="the workflow was locked; sent again shortly",
            )
        if unrun:
            more = True
            await persist("returning leases", self.journal.unlease, unrun, self.owner)
        handled = set(locked) | set(unrun)
        due = [inv for inv in due if inv.id not in handled]
        ok = [inv for inv in due if inv.id not in failed]
        if ok:
            results = {i.id: result.results.get(str(i.id)) for i in ok if i.kind == CALL}
            # the portal has the answers: mark them delivered even if the database needs a while,
            # so they are not sent again when the delivery lease lapses
            if results:  # outbound calls among them (a thread hop saved for a batch of answers only)
                await persist("recording call results", self.journal.call_results, results)
            await persist(
                f"marking {len(ok)} answers delivered", self.journal.delivered, [i.id for i in ok], self.owner
            )
        calls = {i.id for i in due if i.kind == CALL}
        for inv_id, err in failed.items():
            # a refused token can never be accepted: stop trying at once; so is a call the portal refused
            transient = isinstance(err, QueryLimitExceeded | OperationTimeLimit | ServerError | TransportError)
            final = isinstance(err, AccessDenied) or (inv_id in calls and not transient)
            await persist(
                "recording a failed answer",
                self.journal.delivery_failed,
                [inv_id],
                self.owner,
                error=str(err),
                delay=FAILED_COMMAND_DELAY,
                give_up_seconds=self.give_up_seconds,
                final=final,
            )
        if self.on_delivered and ok:
            self.on_delivered(installation_id, ok)
        return more
