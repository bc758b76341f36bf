"""The hourly rollup behind the day and week periods of store/stats.py.

An hour that has ended (`GRACE` seconds ago, so no call stamped within it is still on its way to the
database) is *folded*: its robot calls are counted in all, per robot and per portal into `stats_rollup`, with a
histogram of their run times, and the hour is marked in `stats_hours`. A period then reads the rollup
for its folded hours and the raw rows of the others (the open hour, and any hour unfolded since).

An hour's numbers change after it ended (a run finishes after its hour closed, a retry, a late
insert, retention deleting old entries, a portal removed): triggers on `invocations` (migration
0016_18) delete the hour's mark in the same transaction as the change, so the next read folds it
again from the rows as they are. Folding is done by whoever reads first, in one write transaction;
on PostgreSQL it locks the hour's rows FOR SHARE first, so a concurrent change either commits
before the fold reads or waits for the fold and then deletes its mark.

Run times are kept as a histogram with fixed edges: bin 0 holds up to `BASE` (1 ms), bin b the
run times in (BASE * 2^((b-1)/STEPS), BASE * 2^(b/STEPS)]. A quantile is the upper edge of the bin
that holds the nearest-rank value, so it is never below the exact nearest-rank value and at most
2^(1/16) - 1 = 4.4 % above it (1 ms at the least).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import and_, delete, insert, or_, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from b24robots.errors import StoreError
from b24robots.store.db import Database
from b24robots.store.models import InvocationRow, StatsHourRow, StatsRollupRow

log = logging.getLogger(__name__)

HOUR = 3600
GRACE = 120.0
ADVISORY_LOCK = 0x6232_3472_0016  # "b24r", migration 0016: serializes folds on PostgreSQL
BASE = 0.001
STEPS = 16


def run_bin(seconds: float) -> int:
    """The histogram bin of a run time in seconds (negative clock skew counts as 0)."""
    if seconds <= BASE:
        return 0
    return max(1, math.ceil(STEPS * math.log2(seconds / BASE)))


def bin_upper(b: int) -> float:
    """The upper edge of bin `b`: what a quantile falling into it reports."""
    return float(BASE * 2.0 ** (b / STEPS))


@dataclass
class Tally:
    """Calls, failures, dead letters and the run-time histogram (bin -> runs) of a group of robot calls."""

    calls: int = 0
    failures: int = 0
    dead: int = 0
    runs: dict[int, int] = field(default_factory=dict)

    def add(self, calls: int, failures: int, dead: int, runs: list[int]) -> None:
        """Add a folded group: its counts and its histogram as [bin, count, bin, count, ...]."""
        self.calls += calls
        self.failures += failures
        self.dead += dead
        mine = self.runs
        for i in range(0, len(runs), 2):
            b = runs[i]
            mine[b] = mine.get(b, 0) + runs[i + 1]

    def add_row(self, state: str, has_error: bool, started: float | None, finished: float | None) -> None:
        self.calls += 1
        self.failures += 1 if state in ("failed", "dead") or has_error else 0
        self.dead += 1 if state == "dead" else 0
        if started is not None and finished is not None:
            b = run_bin(finished - started)
            self.runs[b] = self.runs.get(b, 0) + 1

    def quantile(self, q: float) -> float | None:
        """Nearest rank on the histogram: the upper edge of the bin holding the ceil(q * n)-th run."""
        n = sum(self.runs.values())
        if n == 0:
            return None
        rank = (n * round(q * 100) + 99) // 100  # ceil(q * n) in integers, as store/stats.py does
        seen = 0
        for b in sorted(self.runs):
            seen += self.runs[b]
            if seen >= rank:
                return bin_upper(b)
        raise AssertionError("unreachable: the ranks add up to n")

    def encoded(self) -> str:
        return json.dumps([x for b in sorted(self.runs) for x in (b, self.runs[b])], separators=(",", ":"))


@dataclass
class Tallies:
    """A period's tallies: in all, per bucket (oldest first), per robot code and per installation id."""

    total: Tally
    buckets: list[Tally]
    robots: dict[str, Tally]
    portals: dict[int, Tally]


def _ranges(hours: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Contiguous [start, end) runs of the given hours."""
    start = end = None
    for h in sorted(hours):
        if end is not None and h == end:
            end += 1
            continue
        if start is not None and end is not None:
            yield start, end
        start, end = h, h + 1
    if start is not None and end is not None:
        yield start, end


def _calls_in(start: int, end: int) -> ColumnElement[bool]:
    return and_(
        InvocationRow.kind == "robot",
        InvocationRow.received_at >= start * HOUR,
        InvocationRow.received_at < end * HOUR,
    )


_COLUMNS = (
    InvocationRow.received_at,
    InvocationRow.robot_code,
    InvocationRow.installation_id,
    InvocationRow.state,
    InvocationRow.error != "",
    InvocationRow.started_at,
    InvocationRow.finished_at,
)


def _folded(s: Session, first: int, end: int) -> set[int]:
    return set(s.scalars(select(StatsHourRow.hour).where(StatsHourRow.hour >= first, StatsHourRow.hour < end)))


class Rollup:
    def __init__(self, db: Database) -> None:
        self.db = db

    def read(self, since: float, until: float, width: int, now: float) -> Tallies:
        """The robot calls received in [since, until) (whole hours) in buckets of `width` seconds (whole
        hours): folded hours from the rollup, the others from their rows. Folds the ended hours first."""
        first, end = int(since) // HOUR, int(until) // HOUR
        per_bucket = width // HOUR
        out = Tallies(Tally(), [Tally() for _ in range((end - first) // per_bucket)], {}, {})
        try:
            self.fold(first, end, now)
        except StoreError as exc:
            # a database that takes no writes now still answers reads: the hours stay unfolded and are
            # read from their rows, slower but the same numbers
            log.warning("the dashboard's rollup was not brought up to date: %s", exc)
        with self.db.read() as s:
            if not self.db.is_sqlite:  # the marks, the rollup and the raw rows from one snapshot
                s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            folded = set(
                s.scalars(select(StatsHourRow.hour).where(StatsHourRow.hour >= first, StatsHourRow.hour < end))
            )
            rollup = s.execute(
                select(
                    StatsRollupRow.hour,
                    StatsRollupRow.grouping,
                    StatsRollupRow.key,
                    StatsRollupRow.calls,
                    StatsRollupRow.failures,
                    StatsRollupRow.dead,
                    StatsRollupRow.runs,
                )
                .join(StatsHourRow, StatsHourRow.hour == StatsRollupRow.hour)
                .where(StatsRollupRow.hour >= first, StatsRollupRow.hour < end)
            ).all()
            for hour, grouping, key, calls, failures, dead, runs in rollup:
                hist = json.loads(runs)
                if grouping == "all":
                    out.total.add(calls, failures, dead, hist)
                    out.buckets[(hour - first) // per_bucket].add(calls, failures, dead, hist)
                elif grouping == "robot":
                    out.robots.setdefault(key, Tally()).add(calls, failures, dead, hist)
                else:
                    out.portals.setdefault(int(key), Tally()).add(calls, failures, dead, hist)
            raw = [_calls_in(a, b) for a, b in _ranges(set(range(first, end)) - folded)]
            if raw:
                for received, robot, inst, state, has_error, started, finished in s.execute(
                    select(*_COLUMNS).where(or_(*raw))
                ):
                    bucket = out.buckets[(int(received // HOUR) - first) // per_bucket]
                    for tally in (
                        out.total,
                        bucket,
                        out.robots.setdefault(robot, Tally()),
                        out.portals.setdefault(int(inst), Tally()),
                    ):
                        tally.add_row(state, bool(has_error), started, finished)
        return out

    def fold(self, first: int, end: int, now: float) -> int:
        """Fold the hours in [first, end) that ended `GRACE` seconds before `now` and are not folded;
        returns how many were folded."""
        closed = min(end, int((now - GRACE) // HOUR))
        if closed <= first:
            return 0
        with self.db.read() as s:
            have = _folded(s, first, closed)
        if len(have) == closed - first:
            return 0
        folded = 0
        with self.db.write() as s:
            if not self.db.is_sqlite:
                # one folder at a time (SQLite's writers queue anyway); the marks are read after the lock,
                # so an hour another reader just folded is not folded twice
                s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
            have = _folded(s, first, closed)
            for a, b in _ranges(set(range(first, closed)) - have):
                self._fold(s, a, b, now)
                folded += b - a
        return folded

    def _fold(self, s: Session, start: int, end: int, now: float) -> None:
        where = _calls_in(start, end)
        if not self.db.is_sqlite:
            s.execute(select(InvocationRow.id).where(where).with_for_update(read=True)).all()
        tallies: dict[tuple[int, str, str], Tally] = {}
        for received, robot, inst, state, has_error, started, finished in s.execute(select(*_COLUMNS).where(where)):
            hour = int(received // HOUR)
            for key in ((hour, "all", ""), (hour, "robot", robot), (hour, "portal", str(inst))):
                tally = tallies.get(key)
                if tally is None:
                    tally = tallies[key] = Tally()
                tally.add_row(state, bool(has_error), started, finished)
        s.execute(delete(StatsRollupRow).where(StatsRollupRow.hour >= start, StatsRollupRow.hour < end))
        s.execute(delete(StatsHourRow).where(StatsHourRow.hour >= start, StatsHourRow.hour < end))
        if tallies:
            s.execute(
                insert(StatsRollupRow),
                [
                    {
                        "hour": h,
                        "grouping": grouping,
                        "key": key,
                        "calls": t.calls,
                        "failures": t.failures,
                        "dead": t.dead,
                        "runs": t.encoded(),
                    }
                    for (h, grouping, key), t in tallies.items()
                ],
            )
        s.execute(insert(StatsHourRow), [{"hour": h, "folded_at": now} for h in range(start, end)])
