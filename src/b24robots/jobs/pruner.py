"""The background pruner: deletes finished journal entries past their retention, a small batch at a time.

Every `interval` seconds it deletes batches of at most `batch` entries (store/retention.py), pausing
`pause` seconds between batches so that the intake's writes get the database in between; it stops
at the first batch that is not full. Each round first forgets the run-as users' tokens that have
expired (`sweep`, store/caller_tokens.py): runs clear their own token when they end, this catches
the ones whose call has not run again before its token's hour was over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from b24robots.store.retention import KINDS, PruneReport, Retention

log = logging.getLogger("b24robots.jobs")


class Pruner:
    def __init__(
        self,
        retention: Retention,
        *,
        interval: float,
        batch: int,
        pause: float = 0.05,
        sweep: Callable[[float], int] | None = None,
    ) -> None:
        self.retention = retention
        self.sweep = sweep
        self.interval = interval
        self.batch = batch
        self.pause = pause
        self.last_run = 0.0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                report = await self.prune_once()
                if report.total:
                    log.info("pruned %d old journal entries (%s)", report.total, _summary(report))
            except Exception:
                log.exception("pruning the journal failed; trying again in %.0f s", self.interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    async def prune_once(self) -> PruneReport:
        report = PruneReport()
        if self.sweep is not None:
            forgotten = await asyncio.to_thread(self.sweep, time.time())
            if forgotten:
                log.info("forgot %d expired run-as user token(s)", forgotten)
        for kind in KINDS:
            while not self._stopping.is_set():
                n = await asyncio.to_thread(self.retention.prune_batch, kind, now=time.time(), batch=self.batch)
                report.deleted[kind] += n
                if n < self.batch:
                    break
                await asyncio.sleep(self.pause)  # let the intake write between batches
        self.last_run = time.time()
        return report

    async def stop(self) -> None:
        self._stopping.set()


def _summary(report: PruneReport) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in report.deleted.items() if n)
