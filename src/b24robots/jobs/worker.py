"""Workers: claim invocations with a lease, run them, record the outcome.

Long handlers keep their lease alive with a heartbeat; a worker that dies loses its leases and the
rows come back to another worker. Graceful shutdown waits for running handlers up to a grace
period and then gives the remaining leases back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from b24robots.errors import B24RobotsError, NotFound, StoreRefused
from b24robots.policy import retry_in_time
from b24robots.rest.client import RestClient
from b24robots.rest.tokens import UserToken
from b24robots.robots.context import RobotContext
from b24robots.robots.values import short
from b24robots.store.caller_tokens import CallerTokens
from b24robots.store.installation_rows import Installation
from b24robots.store.installations import Installations
from b24robots.store.journal import Invocation, Journal

from .bookkeeping import persist
from .outbound import Outbound, PortalOutbound
from .runner import Outcome, Runner
from .wakeup import Wakeup

log = logging.getLogger("b24robots.jobs")


def owner_id(role: str) -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# how long a worker trusts its copy of an installation (its culture may be changed meanwhile)
PORTAL_CACHE_SECONDS = 30.0


@dataclass
class WorkerStats:
    started: float = 0.0
    runs: int = 0
    last_loop: float = 0.0
    running: int = 0


class Worker:
    def __init__(
        self,
        journal: Journal,
        installations: Installations,
        runner: Runner,
        rest: RestClient | None,
        wakeup: Wakeup,
        *,
        concurrency: int = 4,
        lease: float = 60.0,
        poll: float = 5.0,
        on_outcome: Callable[[Invocation, Outcome, float], None] | None = None,
        on_answer: Callable[[], None] | None = None,
        outbound: Outbound | None = None,
        process: str | None = None,
        caller_tokens: CallerTokens | None = None,
    ) -> None:
        # the run-as users' tokens stored with the calls (any process's intake wrote them)
        self.caller_tokens = caller_tokens
        self.process = process  # this process's id in the processes table (its leases name it)
        self.outbound = outbound
        self.journal = journal
        self.installations = installations
        self.runner = runner
        self.rest = rest
        self.wakeup = wakeup
        self.concurrency = concurrency
        self.lease = lease
        self.poll = poll
        self.owner = owner_id("worker")
        self.on_outcome = on_outcome
        self.on_answer = on_answer
        self.stats = WorkerStats()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._portals: dict[int, Installation] = {}
        self._portals_read: dict[int, float] = {}

    @property
    def alive(self) -> bool:
        return not self._stopping.is_set() and time.time() - self.stats.last_loop < max(30.0, self.poll * 3)

    async def run(self) -> None:
        """Claim and run until `stop()`; then finish or release what is running."""
        self.wakeup.bind(asyncio.get_running_loop())
        self.stats.started = time.time()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping.is_set():
                self.stats.last_loop = time.time()
                free = self.concurrency - len(self._running)
                claimed: list[Invocation] = []
                if free > 0:
                    try:
                        claimed = await asyncio.to_thread(
                            self.journal.claim, self.owner, free, self.lease, process=self.process
                        )
                    except Exception:
                        log.exception("claiming invocations failed; retrying shortly")
                        await asyncio.sleep(1.0)
                for inv in claimed:
                    task = asyncio.create_task(self._execute(inv))
                    self._running[inv.id] = task
                    task.add_done_callback(functools.partial(self._done, inv.id))
                if claimed and len(self._running) < self.concurrency:
                    continue  # there may be more waiting
                await self._idle_wait()
        finally:
            heartbeat.cancel()

    async def _idle_wait(self) -> None:
        timeout = self.poll
        try:
            due = await asyncio.to_thread(self.journal.next_due)
        except Exception:
            due = None
        if due is not None:
            timeout = min(self.poll, max(0.005, due - time.time()))
        stop = asyncio.ensure_future(self._stopping.wait())
        wake = asyncio.ensure_future(self.wakeup.wait(timeout))
        await asyncio.wait({stop, wake}, return_when=asyncio.FIRST_COMPLETED)
        for f in (stop, wake):
            if not f.done():
                f.cancel()

    def _done(self, inv_id: int, _task: object = None) -> None:
        self._running.pop(inv_id, None)
        self.wakeup.notify()  # a slot is free

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        if self._running:
            running = len(self._running)
            log.warning("stopping: waiting up to %.1f s (B24R_SHUTDOWN_GRACE) for %d running robot(s)", grace, running)
            await asyncio.wait(list(self._running.values()), timeout=grace)
        for task in list(self._running.values()):
            task.cancel()
        released = await asyncio.to_thread(self.journal.release, self.owner)
        if released:
            log.info("gave back %d unfinished invocation(s) for another worker", released)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            ids = list(self._running)
            if ids:
                try:
                    await asyncio.to_thread(self.journal.extend, ids, self.owner, self.lease)
                except Exception:
                    log.exception("extending leases failed")

    def _portal(self, installation_id: int) -> Installation:
        cached = self._portals.get(installation_id)
        now = time.monotonic()
        # re-read now and then: settings such as the date culture may change while the worker runs
        if cached is None or now - self._portals_read.get(installation_id, 0.0) > PORTAL_CACHE_SECONDS:
            cached = self.installations.by_id(installation_id)
            self._portals[installation_id] = cached
            self._portals_read[installation_id] = now
        return cached

    def _prepare(self, inv: Invocation, now: float) -> tuple[Installation, UserToken | None]:
        """The entry's portal and its run-as user's token (None: none came, or it expired), in one thread hop."""
        portal = self._portal(inv.installation_id)
        if self.caller_tokens is None or not inv.auth_user_id or inv.too_late(now):
            return portal, None
        return portal, self.caller_tokens.load(inv.id, now)

    async def _execute(self, inv: Invocation) -> None:
        started = time.monotonic()
        now = time.time()
        try:
            portal, user_token = await asyncio.to_thread(self._prepare, inv, now)
        except NotFound:
            await persist(
                f"recording that invocation {inv.id} has no installation",
                self.journal.kill,
                inv.id,
                self.owner,
                error="the installation is gone",
                log=[],
                log_message="",
                outputs={},
            )
            return
        if inv.too_late(now):
            await persist(f"expiring invocation {inv.id}", self.journal.expire_late, [inv.id], self.owner)
            return
        event_token = self.journal.original_token(inv)
        caller = self.rest.as_user(portal.member_id, user_token) if self.rest and user_token else None
        ctx = RobotContext(
            portal=portal.domain,
            member_id=portal.member_id,
            code=inv.robot_code,
            workflow_id=inv.workflow_id,
            document_id=inv.document_id,
            document_type=inv.document_type,
            event_token=event_token,
            user_id=inv.auth_user_id,
            invocation_id=inv.id,
            attempt=inv.attempts,
            rest=self.rest.for_portal(portal.member_id) if self.rest else None,
            rest_as_caller=caller,
            outbound=PortalOutbound(self.outbound, portal.member_id) if self.outbound else None,
            culture=portal.date_culture,
        )
        outcome = await self.runner.run(inv, ctx)
        elapsed = time.monotonic() - started
        try:
            # the robot ran: its outcome is recorded even if the database needs a while (never rerun
            # because the write after it failed); the heartbeat keeps the lease meanwhile
            await persist(f"recording the outcome of invocation {inv.id}", self._record, inv, outcome)
        except StoreRefused as exc:
            # the outcome holds what the database cannot (a NUL byte in PostgreSQL text): storing it fails
            # again on every rerun, so the run fails with the reason instead (outputs and log dropped)
            log.warning("the outcome of invocation %s could not be stored: %s", inv.id, exc.reason)
            outcome = Outcome(
                "dead",
                log_message=short(f"b24robots: the robot's outcome could not be stored: {exc.reason}"),
                error=f"the outcome could not be stored: {exc.reason}",
            )
            try:
                await persist(f"recording the failure of invocation {inv.id}", self._record, inv, outcome)
            except B24RobotsError:
                log.exception("recording the failure of invocation %s failed", inv.id)
                return
        except B24RobotsError:
            log.exception("recording the outcome of invocation %s failed", inv.id)
            return
        self.stats.runs += 1
        if self.on_outcome:
            self.on_outcome(inv, outcome, elapsed)

    def _record(self, inv: Invocation, outcome: Outcome) -> None:
        now = time.time()
        if outcome.kind == "retry":
            # leave time to deliver the failure notice before the workflow stops waiting
            if not retry_in_time(now, outcome.delay, inv.deadline_at, inv.timeout_duration):
                outcome = Outcome(
                    "dead",
                    outputs=outcome.outputs,
                    log=outcome.log,
                    error=outcome.error + " (no time left to retry)",
                    log_message="b24robots: the robot could not finish before the workflow's timeout",
                    ran=outcome.ran,
                )
            else:
                self.journal.retry_later(
                    inv.id, self.owner, delay=outcome.delay, error=outcome.error, log=outcome.log, ran=outcome.ran
                )
                return
        if outcome.kind == "dead":
            self.journal.kill(
                inv.id,
                self.owner,
                error=outcome.error,
                log=outcome.log,
                log_message=outcome.log_message,
                outputs=outcome.outputs,
                ran=outcome.ran,
            )
        else:
            self.journal.finish(
                inv.id,
                self.owner,
                outputs=outcome.outputs,
                log=outcome.log,
                log_message=outcome.log_message,
                error=outcome.error,
                ran=outcome.ran,
            )
        if self.on_answer:
            self.on_answer()
