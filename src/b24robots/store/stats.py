"""Read-only numbers over the journal, the one place both `/metrics` and the admin dashboard take them from.

A *period* (hour, day, week) is a run of equal buckets aligned to the epoch (UTC) and ending with the
bucket that holds `now`: 12 x 5 minutes, 24 x 1 hour, 28 x 6 hours. An entry belongs to the bucket of
its `received_at`, so a call is counted once, in the period it arrived, whatever became of it:

- **calls**: robot calls from portals (`kind = 'robot'`; the trigger fires we owe are not calls),
- **failures**: calls that did not end well so far: waiting for a retry (`failed`), given up (`dead`) or
  answered with a business failure (an `error` kept with the answer),
- **dead**: given up (`dead`), the dead letters,
- **p50 / p95**: run time `finished_at - started_at` of the calls that finished, in seconds, by the
  nearest-rank method (the smallest value with at least q of the values at or below it). The hour
  computes it exactly in SQL with window functions (SQLite 3.25+ and PostgreSQL), one query per
  grouping. The day and the week (whole hours) read the hourly rollup of store/rollup.py: counts are
  exact, a quantile is the upper edge of the run-time histogram bin holding the nearest-rank value
  (never below it, at most 4.4 % above it).

Every aggregate is plain SQL that SQLite and PostgreSQL answer alike; the bucket number is the only
dialect-specific part (PostgreSQL rounds a cast to integer, SQLite truncates). The
`ix_invocations_kind_received_at` index (migration 0014_18) keeps a period's read to its own rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, literal, literal_column, or_, select
from sqlalchemy.sql.elements import ColumnElement

from b24robots.store.db import Database
from b24robots.store.installation_rows import NEEDS_REINSTALL
from b24robots.store.models import InstallationRow, InvocationRow
from b24robots.store.rollup import HOUR, Rollup, Tally

# period -> (bucket width in seconds, number of buckets)
PERIODS: dict[str, tuple[int, int]] = {"hour": (300, 12), "day": (3600, 24), "week": (6 * 3600, 28)}
QUANTILES = (0.5, 0.95)
_WAITING = ("queued", "failed", "running")


@dataclass(frozen=True)
class RunStats:
    """Calls, failures, dead letters and run-time quantiles of one robot, one portal or one bucket."""

    key: str
    calls: int = 0
    failures: int = 0
    dead: int = 0
    p50: float | None = None
    p95: float | None = None


@dataclass(frozen=True)
class Window:
    """One period's numbers: in total, per robot, per portal and per bucket (oldest bucket first)."""

    period: str
    since: float
    until: float
    width: int
    total: RunStats
    by_robot: list[RunStats]
    by_portal: list[RunStats]
    buckets: list[RunStats] = field(default_factory=list)

    def bucket_start(self, index: int) -> float:
        return self.since + index * self.width


@dataclass(frozen=True)
class PortalQueue:
    domain: str
    waiting: int  # queued, failed (retry pending) or running
    owed: int  # answers to be delivered


@dataclass(frozen=True)
class TokenHealth:
    domain: str
    status: str
    status_message: str
    expires_at: float

    @property
    def needs_reinstall(self) -> bool:
        return self.status == NEEDS_REINSTALL


def period_bounds(period: str, now: float) -> tuple[float, float, int, int]:
    """(since, until, bucket width, buckets) of `period` at `now`; ValueError for an unknown period."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}: use one of {', '.join(PERIODS)}")
    width, count = PERIODS[period]
    until = (int(now) // width + 1) * width
    return float(until - width * count), float(until), width, count


def _failed() -> ColumnElement[bool]:
    return or_(InvocationRow.state.in_(("failed", "dead")), InvocationRow.error != "")


class Stats:
    """The journal's numbers. Reads only; every method is one or a few aggregate queries."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the state of the queue now -------------------------------------------------------------
    def counts(self) -> list[tuple[str, str, int]]:
        """(state, robot_code, count) for every pair present."""
        with self.db.read() as s:
            rows = s.execute(
                select(InvocationRow.state, InvocationRow.robot_code, func.count()).group_by(
                    InvocationRow.state, InvocationRow.robot_code
                )
            ).all()
            return [(st, code, int(n)) for st, code, n in rows]

    def queues(self) -> list[PortalQueue]:
        """Per portal that has entries: how many wait to run and how many answers are owed."""
        waiting = func.sum(case((InvocationRow.state.in_(_WAITING), 1), else_=0))
        owed = func.sum(case((InvocationRow.deliver_after.is_not(None), 1), else_=0))
        with self.db.read() as s:
            rows = s.execute(
                select(InstallationRow.domain, waiting, owed)
                .join(InstallationRow, InstallationRow.id == InvocationRow.installation_id)
                .group_by(InstallationRow.domain)
                .order_by(InstallationRow.domain)
            ).all()
        return [PortalQueue(d, int(a or 0), int(b or 0)) for d, a, b in rows]

    def tokens(self) -> list[TokenHealth]:
        """Every installation's status and when its access token expires (it is refreshed on use)."""
        with self.db.read() as s:
            rows = s.execute(
                select(
                    InstallationRow.domain,
                    InstallationRow.status,
                    InstallationRow.status_message,
                    InstallationRow.expires_at,
                ).order_by(InstallationRow.domain)
            ).all()
        return [TokenHealth(d, st, msg or "", float(exp or 0.0)) for d, st, msg, exp in rows]

    # --- a period -----------------------------------------------------------------------------
    def window(self, period: str, now: float | None = None, *, buckets: bool = True) -> Window:
        """The numbers of `period` (see the module docstring) at `now`, per robot, portal and bucket."""
        now = time.time() if now is None else now
        if period in PERIODS and PERIODS[period][0] % HOUR == 0:
            return self._from_rollup(period, now, buckets=buckets)
        return self.window_from_rows(period, now, buckets=buckets)

    def window_from_rows(self, period: str, now: float, *, buckets: bool = True) -> Window:
        """`window` computed from the rows alone, quantiles exact: what the hour reads (bench/dashboard.py
        compares the day and the week read this way with the rollup)."""
        since, until, width, count = period_bounds(period, now)
        in_window = and_(
            InvocationRow.kind == "robot", InvocationRow.received_at >= since, InvocationRow.received_at < until
        )
        bucket = self._bucket(since, width)
        with self.db.read() as s:
            domains = dict(s.execute(select(InstallationRow.id, InstallationRow.domain)).all())
            groups: dict[str, Any] = {
                "total": None,
                "robot": InvocationRow.robot_code,
                "portal": InvocationRow.installation_id,
            }
            if buckets:
                groups["bucket"] = bucket
            out: dict[str, dict[str, RunStats]] = {}
            for name, key in groups.items():
                out[name] = {
                    str(k): RunStats(str(k), int(n), int(f or 0), int(d or 0), _seconds(p50), _seconds(p95))
                    for k, n, f, d, p50, p95 in s.execute(self._grouped(key, in_window)).all()
                }
        total = out["total"].get("all", RunStats("all"))
        by_robot = sorted(out["robot"].values(), key=lambda r: (-r.calls, r.key))
        by_portal = sorted(
            (
                RunStats(domains.get(int(r.key), r.key), r.calls, r.failures, r.dead, r.p50, r.p95)
                for r in out["portal"].values()
            ),
            key=lambda r: (-r.calls, r.key),
        )
        series = []
        if buckets:
            for i in range(count):
                found = out["bucket"].get(str(i))
                series.append(RunStats(str(i)) if found is None else found)
        return Window(period, since, until, width, total, by_robot, by_portal, series)

    def _from_rollup(self, period: str, now: float, *, buckets: bool) -> Window:
        """A period of whole hours: the folded hours from the rollup, the rest from the raw rows."""
        since, until, width, _ = period_bounds(period, now)
        got = Rollup(self.db).read(since, until, width, now)
        with self.db.read() as s:
            domains = dict(s.execute(select(InstallationRow.id, InstallationRow.domain)).all())

        def stats(key: str, t: Tally) -> RunStats:
            return RunStats(key, t.calls, t.failures, t.dead, t.quantile(QUANTILES[0]), t.quantile(QUANTILES[1]))

        by_robot = sorted((stats(k, t) for k, t in got.robots.items()), key=lambda r: (-r.calls, r.key))
        by_portal = sorted(
            (stats(domains.get(k, str(k)), t) for k, t in got.portals.items()), key=lambda r: (-r.calls, r.key)
        )
        series = [stats(str(i), t) for i, t in enumerate(got.buckets)] if buckets else []
        return Window(period, since, until, width, stats("all", got.total), by_robot, by_portal, series)

    def _bucket(self, since: float, width: int) -> ColumnElement[Any]:
        # the numbers are ours, inlined: PostgreSQL takes a GROUP BY expression with bound
        # parameters for another one than the same expression in the select list
        offset = (InvocationRow.received_at - literal_column(repr(float(since)))) / literal_column(repr(float(width)))
        if self.db.is_sqlite:
            return cast(offset, Integer)  # SQLite truncates toward zero
        return cast(func.floor(offset), Integer)  # PostgreSQL would round a plain cast

    @staticmethod
    def _grouped(key: Any, where: ColumnElement[bool]) -> Any:
        """Per `key`, in one pass: calls, failures, dead and the nearest-rank p50 and p95 of the run time.

        The rows are ranked by run time within their group, the unfinished ones (no run time) last on
        both databases (`ORDER BY d IS NULL, d`: SQLite sorts NULL first, PostgreSQL last), and `n`
        counts the finished ones, so ranks 1..n are the run times in order."""
        duration = (InvocationRow.finished_at - InvocationRow.started_at).label("d")
        part = None if key is None else key
        ranked = (
            select(
                (literal("all") if key is None else key).label("k"),
                duration,
                case((_failed(), 1), else_=0).label("f"),
                case((InvocationRow.state == "dead", 1), else_=0).label("dead"),
                func.row_number().over(partition_by=part, order_by=(duration.is_(None), duration)).label("rn"),
                func.count(duration).over(partition_by=part).label("n"),
            )
            .where(where)
            .subquery()
        )
        picks = []
        for q in QUANTILES:
            # ceil(q * n) in integers, alike on both databases: (100q * n + 99) div 100 (0 when n is 0)
            rank = (ranked.c.n * round(q * 100) + 99) // 100
            picks.append(func.max(case((ranked.c.rn == rank, ranked.c.d), else_=None)))
        return select(ranked.c.k, func.count(), func.sum(ranked.c.f), func.sum(ranked.c.dead), *picks).group_by(
            ranked.c.k
        )


def _seconds(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))
