"""This process's heartbeat, and reclaiming the leases of processes that stopped beating.

A registered process beats every `interval` seconds; on each beat it also looks for other processes
whose heartbeat is older than `stale` seconds and makes their leases lapse (store/processes.py), so
a crashed process's runs and deliveries are taken over within seconds rather than after their
60 s / 120 s leases. At start-up it first reclaims its own previous incarnation (a restart after a
crash) if that process no longer runs on this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from b24robots.store.processes import Processes, ProcessInfo, Reclaimed

log = logging.getLogger("b24robots.jobs")


def this_process(role: str, *, data_dir: Path, name: str = "", now: float | None = None) -> ProcessInfo:
    """The identity of this process; a restart shares `incarnation` (role, host, worker name or data dir)."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    pid = os.getpid()
    where = name or str(data_dir.resolve())
    return ProcessInfo(
        id=f"{role}:{host}:{pid}:{uuid.uuid4().hex[:8]}",
        role=role,
        host=host,
        incarnation=f"{role}:{host}:{where}"[:1024],
        pid=pid,
        started_at=now,
        heartbeat_at=now,
    )


def pid_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is somebody else's
    return True


class Heartbeat:
    def __init__(
        self,
        processes: Processes,
        info: ProcessInfo,
        *,
        interval: float,
        stale: float,
        on_reclaim: Callable[[], None] | None = None,
    ) -> None:
        self.processes = processes
        self.info = info
        self.interval = interval
        self.stale = stale
        self.on_reclaim = on_reclaim
        self.last_beat = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register, reclaim our previous incarnation's leases, then beat in the background."""
        await asyncio.to_thread(self.processes.register, self.info)
        self.last_beat = time.time()
        try:
            found = await asyncio.to_thread(
                self.processes.reclaim_previous, self.info, is_running=pid_running, now=time.time()
            )
            self._reclaimed(found, "its previous run on this host")
        except Exception:
            log.exception("reclaiming the leases of this process's previous run failed")
        self._task = asyncio.create_task(self._run(), name="b24r-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.to_thread(self.processes.unregister, self.info.id)
        except Exception:
            log.exception("removing this process from the processes table failed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat failed; trying again in %.1f s", self.interval)

    async def beat(self) -> Reclaimed:
        """One heartbeat and one look for stale processes."""
        now = time.time()
        if not await asyncio.to_thread(self.processes.beat, self.info.id, now):
            # another process took us for dead (we did not beat for `stale` seconds): our leases
            # were made to lapse; whatever we still finish is recorded only if nobody took it over
            log.warning("this process was taken for dead (no heartbeat for %.0f s); registering again", self.stale)
            await asyncio.to_thread(self.processes.register, self.info)
        self.last_beat = now
        found = await asyncio.to_thread(self.processes.reclaim_stale, self.info.id, stale_seconds=self.stale, now=now)
        self._reclaimed(found, f"no heartbeat for {self.stale:.0f} s")
        return found

    def _reclaimed(self, found: Reclaimed, why: str) -> None:
        if not found.processes:
            return
        log.warning(
            "took over %d lease(s) of %d stopped process(es) (%s): %s",
            found.leases,
            len(found.processes),
            why,
            ", ".join(found.processes),
        )
        if found.leases and self.on_reclaim:
            self.on_reclaim()
