"""The dashboard's queries (store/stats.py) on a journal of 100,000 robot calls spread over a week.

    python bench/dashboard.py [--rows N] [--runs N] [--pg]

Rows: `Stats.window` for the hour, the day and the week (counts and nearest-rank p50/p95 per bucket,
robot and portal: what one dashboard page reads), the day and the week also computed from the rows
alone (`window_from_rows`, what they read before the hourly rollup of store/rollup.py) for the ratio,
the first fold of the week into the rollup (once, after an upgrade), `queues()` and `tokens()`, and a
whole `/metrics` journal scrape (the three periods per robot and portal, without buckets). SQLite by default, PostgreSQL
as well with `--pg` (a throw-away server, bench/pg.py). Target: a dashboard page's queries within 500 ms
on 100k rows, best of N (the week reads every row; the hour reads its own through the
(kind, received_at) index).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from b24robots.store.db import Database  # noqa: E402
from b24robots.store.installations import Installations  # noqa: E402
from b24robots.store.journal import Journal  # noqa: E402
from b24robots.store.limiter_state import LimiterBuckets  # noqa: E402
from b24robots.store.models import InstallationRow, InvocationRow  # noqa: E402
from b24robots.store.rollup import Rollup  # noqa: E402
from b24robots.store.stats import Stats  # noqa: E402
from b24robots.web.metrics import Metrics  # noqa: E402
from bench.common import temp_dir  # noqa: E402

WEEK = 7 * 86400
STATES = ["delivered"] * 90 + ["answered"] * 4 + ["failed"] * 2 + ["dead"] * 2 + ["queued"] * 2


def fill(db: Database, rows: int, now: float) -> None:
    rng = random.Random(18)
    with db.write() as s:
        portals = []
        for i in range(5):
            row = InstallationRow(
                member_id=f"m{i}",
                domain=f"p{i}.example.test",
                status="active",
                client_endpoint=f"https://p{i}.example.test/rest/",
                server_endpoint="https://oauth.bitrix.info/rest/",
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            portals.append(row.id)
    batch = []
    for n in range(rows):
        received = now - rng.uniform(0, WEEK)
        state = rng.choice(STATES)
        done = state not in ("queued", "failed")
        batch.append(
            {
                "event_token": f"tok-{n}",
                "installation_id": rng.choice(portals),
                "robot_code": f"robot.{rng.randrange(20)}",
                "document_id": [],
                "document_type": [],
                "properties": {},
                "log": [],
                "state": state,
                "error": "failed" if state in ("failed", "dead") or rng.random() < 0.02 else "",
                "run_after": received,
                "received_at": received,
                "started_at": received + 0.01,
                "finished_at": received + 0.01 + rng.lognormvariate(-3, 1) if done else None,
            }
        )
        if len(batch) == 5000:
            with db.write() as s:
                s.execute(insert(InvocationRow), batch)
            batch = []
    if batch:
        with db.write() as s:
            s.execute(insert(InvocationRow), batch)


def timings(runs: int, fn: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure(name: str, db: Database, rows: int, runs: int, table: Table) -> None:
    now = time.time()
    started = time.perf_counter()
    fill(db, rows, now)
    filled = time.perf_counter() - started
    stats = Stats(db)
    metrics = Metrics(Journal(db), Installations(db, vault=None), LimiterBuckets(db))  # type: ignore[arg-type]

    def period(p: str) -> Callable[[], object]:
        return lambda: stats.window(p, now)

    def raw(p: str) -> Callable[[], object]:
        return lambda: stats.window_from_rows(p, now)

    started = time.perf_counter()
    folded = Rollup(db).fold(int(now - WEEK) // 3600, int(now) // 3600 + 1, now)
    table.add_row(name, f"first fold ({folded} hours)", f"{(time.perf_counter() - started) * 1000:.1f}", "")
    cases: list[tuple[str, Callable[[], object]]] = []
    for p in ("hour", "day", "week"):
        if p != "hour":
            cases.append((f"window('{p}') from the rows", raw(p)))
        cases.append((f"window('{p}')", period(p)))
    cases += [
        ("queues() + tokens()", lambda: (stats.queues(), stats.tokens())),
        (
            "dashboard page (day + queues + tokens) from the rows",
            lambda: (stats.window_from_rows("day", now), stats.queues(), stats.tokens()),
        ),
        (
            "dashboard page (day + queues + tokens)",
            lambda: (stats.window("day", now), stats.queues(), stats.tokens()),
        ),
        (
            "dashboard page (week + queues + tokens)",
            lambda: (stats.window("week", now), stats.queues(), stats.tokens()),
        ),
        ("/metrics render", metrics.render),
    ]
    for label, fn in cases:
        samples = timings(runs, fn)
        table.add_row(name, label, f"{min(samples):.1f}", f"{statistics.median(samples):.1f}")
    table.caption = f"{rows:,} rows, filled in {filled:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", action="store_true")
    args = parser.parse_args()
    table = Table(title=f"dashboard queries on {args.rows:,} journal rows, {args.runs} runs")
    for col in ("database", "query", "best ms", "median ms"):
        table.add_column(col, justify="right")
    db = Database(f"sqlite:///{temp_dir('b24r-dash') / 'bench.db'}")
    db.migrate()
    measure("SQLite", db, args.rows, args.runs, table)
    db.dispose()
    if args.pg:
        from bench.pg import DurablePostgres

        server = DurablePostgres()
        server.start()
        try:
            pg = Database(server.new_database("b24r_dash"))
            pg.migrate()
            measure("PostgreSQL", pg, args.rows, args.runs, table)
            pg.dispose()
        finally:
            server.stop()
    Console().print(table)


if __name__ == "__main__":
    main()
