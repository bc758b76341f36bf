"""Running processes and their heartbeats; the leases of a process that stopped beating are reclaimed.

Every `serve` (with workers) and `worker` process registers a row and beats every few seconds.
Leases (a run's and a delivery's) name the holding process in `invocations.lease_process`. A live
process that finds another whose heartbeat is older than the stale limit makes that process's
leases lapse at once (the rows run or are sent again by whoever claims them next) and removes its
row, instead of waiting out the 60 s / 120 s lease. At start-up a process does the same for its own
previous incarnation (same role, host and data dir or worker name) when that process is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update

from b24robots.store.db import Database
from b24robots.store.journal import NOTIFY_CHANNEL
from b24robots.store.models import InvocationRow, ProcessRow


@dataclass(frozen=True)
class ProcessInfo:
    id: str
    role: str
    host: str
    incarnation: str
    pid: int
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True)
class Reclaimed:
    """What a reclaim found: the processes given up and how many of their leases lapsed."""

    processes: tuple[str, ...] = ()
    leases: int = 0


def _info(row: ProcessRow) -> ProcessInfo:
    return ProcessInfo(row.id, row.role, row.host, row.incarnation, row.pid, row.started_at, row.heartbeat_at)


class Processes:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, info: ProcessInfo) -> None:
        """Add this process (or beat, if it is already there)."""
        with self.db.write() as s:
            row = s.get(ProcessRow, info.id)
            if row is None:
                s.add(
                    ProcessRow(
                        id=info.id,
                        role=info.role,
                        host=info.host,
                        incarnation=info.incarnation,
                        pid=info.pid,
                        started_at=info.started_at,
                        heartbeat_at=info.heartbeat_at,
                    )
                )
            else:
                row.heartbeat_at = info.heartbeat_at

    def beat(self, process_id: str, now: float) -> bool:
        """Record a heartbeat; False when the row is gone (another process declared us dead)."""
        with self.db.write() as s:
            result = s.execute(update(ProcessRow).where(ProcessRow.id == process_id).values(heartbeat_at=now))
            return int(getattr(result, "rowcount", 0)) > 0

    def unregister(self, process_id: str) -> None:
        with self.db.write() as s:
            s.execute(delete(ProcessRow).where(ProcessRow.id == process_id))

    def all(self) -> list[ProcessInfo]:
        with self.db.read() as s:
            return [_info(r) for r in s.scalars(select(ProcessRow).order_by(ProcessRow.started_at))]

    def reclaim_stale(self, me: str, *, stale_seconds: float, now: float) -> Reclaimed:
        """Give up every other process whose last heartbeat is older than `stale_seconds`."""
        with self.db.write() as s:
            ids = list(
                s.scalars(
                    select(ProcessRow.id).where(ProcessRow.id != me, ProcessRow.heartbeat_at < now - stale_seconds)
                )
            )
        return self._reclaim(ids, now)

    def reclaim_previous(self, me: ProcessInfo, *, is_running: Callable[[int], bool], now: float) -> Reclaimed:
        """At start-up: give up our own previous incarnations on this host whose pid no longer runs."""
        with self.db.read() as s:
            rows = list(
                s.scalars(
                    select(ProcessRow).where(
                        ProcessRow.incarnation == me.incarnation, ProcessRow.host == me.host, ProcessRow.id != me.id
                    )
                )
            )
        gone = [r.id for r in rows if r.pid == me.pid or not is_running(r.pid)]
        return self._reclaim(gone, now)

    def _reclaim(self, ids: list[str], now: float) -> Reclaimed:
        if not ids:
            return Reclaimed()
        with self.db.write() as s:
            # the lease lapses now; owner and attempt count stay as they are, exactly as if it had run out
            result = s.execute(
                update(InvocationRow)
                .where(InvocationRow.lease_process.in_(ids), InvocationRow.lease_expires_at.is_not(None))
                .values(lease_expires_at=now, lease_process=None)
            )
            s.execute(delete(ProcessRow).where(ProcessRow.id.in_(ids)))
            leases = int(getattr(result, "rowcount", 0))
            if leases and not self.db.is_sqlite:
                s.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")))
        return Reclaimed(tuple(ids), leases)
