"""The hourly rollup behind the day and the week (store/rollup.py) on real SQLite and PostgreSQL: after
every kind of change to an hour that has ended (a run finishing late, a late insert, a retry, retention
pruning, a portal removed) the numbers still equal a direct computation on the rows in the database."""

from __future__ import annotations

import math
import random
import threading
from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, update

from b24robots.errors import StoreError
from b24robots.store.db import Database
from b24robots.store.journal import Journal
from b24robots.store.models import InstallationRow, InvocationRow, StatsHourRow, StatsRollupRow
from b24robots.store.retention import Retention, RetentionPeriods
from b24robots.store.rollup import GRACE, HOUR, Rollup
from b24robots.store.stats import Stats, Window, period_bounds
from tests.test_dashboard import Entry, histogram_edge, nearest_rank, same, write_journal

DAY = 86400.0
NOW = 1_800_000_123.0  # 34 min 3 s past an hour


def portal(db: Database, domain: str) -> int:
    with db.write() as s:
        row = InstallationRow(
            member_id=f"m-{domain}",
            domain=domain,
            status="active",
            client_endpoint=f"https://{domain}/rest/",
            server_endpoint="https://oauth.bitrix.info/rest/",
            created_at=0.0,
            updated_at=0.0,
        )
        s.add(row)
        s.flush()
        return int(row.id)


Numbers = tuple[int, int, int, float | None, float | None]  # calls, failures, dead, p50, p95


def direct(db: Database, period: str, now: float) -> dict[str, dict[str, Numbers]]:
    """The period's numbers from the invocation rows as they are, in Python: per robot, portal, bucket."""
    since, until, width, _ = period_bounds(period, now)
    with db.read() as s:
        rows = s.execute(
            select(
                InvocationRow.received_at,
                InvocationRow.robot_code,
                InstallationRow.domain,
                InvocationRow.state,
                InvocationRow.error,
                InvocationRow.started_at,
                InvocationRow.finished_at,
            )
            .join(InstallationRow, InstallationRow.id == InvocationRow.installation_id)
            .where(InvocationRow.kind == "robot")
        ).all()
    groups: dict[str, dict[str, list[tuple[str, str, float | None]]]] = defaultdict(lambda: defaultdict(list))
    for received, robot, domain, state, error, started, finished in rows:
        if not since <= received < until:
            continue
        run = None if started is None or finished is None else max(0.0, finished - started)
        for grouping, key in (("robot", robot), ("portal", domain), ("bucket", str(int((received - since) // width)))):
            groups[grouping][key].append((state, error, run))
    out: dict[str, dict[str, Numbers]] = {}
    for grouping, keyed in groups.items():
        out[grouping] = {}
        for key, items in keyed.items():
            runs = [r for _, _, r in items if r is not None]
            out[grouping][key] = (
                len(items),
                sum(1 for st, err, _ in items if st in ("failed", "dead") or err),
                sum(1 for st, _, _ in items if st == "dead"),
                histogram_edge(nearest_rank(runs, 0.5)),
                histogram_edge(nearest_rank(runs, 0.95)),
            )
    return out


def check(db: Database, now: float = NOW) -> Window:
    """The day and the week from Stats equal the direct computation; returns the day."""
    day = None
    for period in ("day", "week"):
        window = Stats(db).window(period, now)
        want = direct(db, period, now)
        got = {
            "robot": {r.key: r for r in window.by_robot},
            "portal": {r.key: r for r in window.by_portal},
            "bucket": {b.key: b for b in window.buckets if b.calls},
        }
        for grouping in ("robot", "portal", "bucket"):
            assert set(got[grouping]) == set(want.get(grouping, {})), (period, grouping)
            for key, (calls, failures, dead, p50, p95) in want.get(grouping, {}).items():
                r = got[grouping][key]
                assert (r.calls, r.failures, r.dead) == (calls, failures, dead), (period, grouping, key)
                assert same(r.p50, p50) and same(r.p95, p95), (period, grouping, key, r, p50, p95)
        assert window.total.calls == sum(c for c, *_ in want.get("robot", {}).values())
        day = window if period == "day" else day
    assert day is not None
    return day


def folded_hours(db: Database) -> set[int]:
    with db.read() as s:
        return set(s.scalars(select(StatsHourRow.hour)))


def test_the_rollup_follows_every_change_to_an_ended_hour(db: Database) -> None:
    first, second = portal(db, "a.example.test"), portal(db, "b.example.test")
    rng = random.Random(16)
    states = ["delivered"] * 8 + ["answered", "failed", "dead", "queued"]
    entries = []
    for _ in range(600):
        state = rng.choice(states)
        run = None if state in ("queued", "failed") else round(rng.lognormvariate(-2, 1.2), 4)
        error = "boom" if state in ("failed", "dead") or rng.random() < 0.05 else ""
        entries.append(
            Entry(
                rng.choice(["r.a", "r.b", "r.c"]),
                rng.choice([first, second]),
                rng.uniform(0, 8 * 86400),
                state,
                error,
                run,
            )
        )
    write_journal(db, entries, NOW)
    check(db)
    # every hour of the week that ended GRACE seconds ago is folded; the open hour is not
    since, _, _, _ = period_bounds("week", NOW)
    closed = int((NOW - GRACE) // HOUR)
    assert folded_hours(db) == set(range(int(since) // HOUR, closed))
    # the day and the week read the folded hours from the rollup, not from the rows
    hour = closed - 3
    with db.write() as s:
        s.execute(
            update(StatsRollupRow)
            .where(StatsRollupRow.hour == hour, StatsRollupRow.grouping == "all")
            .values(calls=StatsRollupRow.calls + 1000)
        )
    rows_say = sum(v[0] for v in direct(db, "day", NOW)["robot"].values())
    assert Stats(db).window("day", NOW).total.calls == rows_say + 1000
    with db.write() as s:  # undo it by unfolding the hour: it is folded again at the next read
        s.execute(delete(StatsHourRow).where(StatsHourRow.hour == hour))

    # a call received five hours ago, still queued when its hour was folded, runs now and fails
    received = (closed - 5) * HOUR + 100.0
    with db.write() as s:
        late = InvocationRow(
            event_token="late",
            installation_id=first,
            robot_code="r.late",
            document_id=[],
            document_type=[],
            properties={},
            log=[],
            state="queued",
            run_after=received,
            received_at=received,
        )
        s.add(late)
        s.flush()
        late_id = int(late.id)
    assert closed - 5 not in folded_hours(db)  # the insert unfolded its hour
    check(db)
    assert closed - 5 in folded_hours(db)
    with db.write() as s:
        s.execute(
            update(InvocationRow)
            .where(InvocationRow.id == late_id)
            .values(state="dead", error="gave up", started_at=NOW - 60, finished_at=NOW - 30)
        )
    assert closed - 5 not in folded_hours(db)
    day = check(db)
    assert {r.key: (r.calls, r.failures, r.dead) for r in day.by_robot}["r.late"] == (1, 1, 1)
    assert {r.key: r.p50 for r in day.by_robot}["r.late"] == histogram_edge(30.0)

    # a dead letter retried from the journal is waiting again: one dead letter fewer
    Journal(db).retry(late_id, now=NOW)
    day = check(db)
    assert {r.key: (r.calls, r.failures, r.dead) for r in day.by_robot}["r.late"] == (1, 0, 0)

    # a lease renewal or an answer owed changes nothing the dashboard counts: the hour stays folded
    with db.write() as s:
        s.execute(update(InvocationRow).where(InvocationRow.id == late_id).values(lease_owner="w1", deliver_after=NOW))
    assert closed - 5 in folded_hours(db)

    # retention deletes entries that finished more than two days ago, across many folded hours
    before = len(folded_hours(db))
    pruned = Retention(db, RetentionPeriods(delivered_days=2, failed_days=2, dead_days=2)).prune(now=NOW, batch=50)
    assert pruned.total > 100
    assert len(folded_hours(db)) < before - 50
    check(db)

    # a portal removed takes its calls along (ON DELETE CASCADE fires the triggers as well)
    with db.write() as s:
        s.execute(delete(InstallationRow).where(InstallationRow.id == second))
    check(db)
    assert {r.key for r in Stats(db).window("week", NOW).by_portal} == {"a.example.test"}


def test_an_hour_is_folded_only_after_its_grace(db: Database) -> None:
    first = portal(db, "a.example.test")
    start = math.floor(NOW / HOUR) * HOUR  # the open hour began 34 min ago
    now = start + GRACE - 1  # the hour before ended just now: calls stamped in it may still be on their way
    write_journal(db, [Entry("r.a", first, GRACE + 30, run=0.2), Entry("r.a", first, GRACE + 10, run=0.4)], now)
    check(db, now)
    assert int(start // HOUR) - 1 not in folded_hours(db)
    check(db, start + GRACE + 1)
    assert int(start // HOUR) - 1 in folded_hours(db)
    with db.read() as s:
        assert s.scalar(select(func.sum(StatsRollupRow.calls)).where(StatsRollupRow.grouping == "all")) == 2


def test_readers_folding_the_same_hours_at_once_both_succeed(db: Database) -> None:
    first = portal(db, "a.example.test")
    rng = random.Random(5)
    write_journal(db, [Entry("r.a", first, rng.uniform(0, 7 * DAY), run=0.1) for _ in range(300)], NOW)
    since, until, _, _ = period_bounds("week", NOW)
    start = threading.Barrier(2)
    done: list[int] = []
    errors: list[BaseException] = []

    def fold() -> None:
        try:
            start.wait(timeout=10)
            done.append(Rollup(db).fold(int(since) // HOUR, int(until) // HOUR, NOW))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fold) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    closed = int((NOW - GRACE) // HOUR) - int(since) // HOUR
    assert sorted(done) == [0, closed]  # one of them folded every ended hour, the other found them folded
    check(db)


def test_a_database_that_takes_no_writes_still_gets_its_numbers(sqlite_db: Database) -> None:
    """SQLite in query-only mode refuses the fold's writes: the ended hours are read from their rows."""
    first = portal(sqlite_db, "a.example.test")
    write_journal(sqlite_db, [Entry("r.a", first, 3 * 3600, run=0.2), Entry("r.a", first, 60, run=0.4)], NOW)
    sqlite_db.engine.dispose()

    @event.listens_for(sqlite_db.engine, "connect")
    def _query_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only = ON")

    with pytest.raises(StoreError):
        Rollup(sqlite_db).fold(int(NOW - DAY) // HOUR, int(NOW) // HOUR, NOW)
    day = check(sqlite_db)
    assert day.total.calls == 2 and folded_hours(sqlite_db) == set()
