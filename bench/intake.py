"""Intake: acknowledged robot calls per second and acknowledgement latency, durable commit, real HTTP.

    python bench/intake.py [--quick] [--requests N] [--baseline-requests N] [--levels 1,16,64]
                           [--clients K] [--no-postgres] [--json PATH]

Ours: `b24robots serve bench.robots:router --no-workers` (uvicorn, 127.0.0.1) on SQLite and on a
durable PostgreSQL; an answer means the call is committed to the journal. Baseline: a minimal
FastAPI handler that validates each call with `app.info` against the simulator (served on a real
port) and stores nothing. Bodies are the simulator's own robot calls (fresh tokens, unique
event_token). Load comes from bench/load.py in separate processes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from b24robots.store.db import Database
from b24robots.store.journal import Journal
from b24robots.testing import PortalSimulator, SimulatorServer
from bench import pg
from bench.common import (
    BaselineServer,
    OurServer,
    capture_bodies,
    fmt_ratio,
    free_port,
    install,
    latency_ms,
    lift_bucket,
    machine,
    ratio,
    register_robot,
    register_served_app,
    result_path,
    run_load,
    verdict,
    write_result,
)
from bench.robots import MODULE_CODE, PROPERTIES

TARGET_P99_MS = 10.0


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "per_s": run["per_s"],
        **latency_ms(run["latencies"]),
        "statuses": run["statuses"],
        "answers": run["answers"],
        "wall_s": run["wall_s"],
    }


async def measure_ours(
    sim: PortalSimulator, label: str, database_url: str, levels: list[int], n: int, warmup: int, clients: int
) -> dict[str, Any]:
    portal = sim.add_portal()
    port = free_port()
    app = register_served_app(sim, port, f"bench intake {label}")
    server = OurServer(app, database_url=database_url, workers=False, port=port, oauth_url=sim.oauth_url)
    server.start()
    try:
        await install(sim, server.app, portal, [MODULE_CODE])
        bodies = await capture_bodies(sim, portal, MODULE_CODE, len(levels) * (n + warmup), PROPERTIES)
        out: dict[str, Any] = {}
        for i, level in enumerate(levels):
            mine = bodies[i * (n + warmup) : (i + 1) * (n + warmup)]
            run = run_load(f"{server.base_url}/b24/robot", mine, concurrency=level, warmup=warmup, clients=clients)
            out[str(level)] = summarize(run)
        db = Database(server.database_url)
        try:
            stored = sum(count for _, _, count in Journal(db).counts())
        finally:
            db.dispose()
    finally:
        server.stop()
    sent = len(bodies)
    for level in out.values():
        if level["statuses"].get("200", 0) != level["n"] or level["answers"].get("queued", 0) != level["n"]:
            raise RuntimeError(f"{label}: not every call was acknowledged as queued: {level}")
    if stored != sent:
        raise RuntimeError(f"{label}: {sent} calls acknowledged but {stored} rows in the journal")
    return {"levels": out, "journal_rows": stored}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.levels.split(",")]
    warmup = max(5, args.requests // 10)
    sim = PortalSimulator()
    report: dict[str, Any] = {"machine": machine(), "levels": levels, "requests": args.requests, "warmup": warmup}
    with SimulatorServer(sim):
        ours: dict[str, Any] = {}
        ours["sqlite"] = await measure_ours(sim, "sqlite", "", levels, args.requests, warmup, args.clients)
        if args.postgres and pg.available():
            server = pg.DurablePostgres()
            server.start()
            try:
                report["postgres_settings"] = server.settings()
                url = server.new_database("bench_intake")
                ours["postgresql"] = await measure_ours(
                    sim, "postgresql", url, levels, args.requests, warmup, args.clients
                )
            finally:
                server.stop()
        else:
            report["postgres_skipped"] = "PostgreSQL not installed" if args.postgres else "--no-postgres"
        report["ours"] = ours

        # the baseline and the load generator's ceiling, against the same simulator
        portal = sim.add_portal()
        app = sim.register_app("bench intake baseline")
        await sim.install_app(app, portal, notify=False)
        lift_bucket(sim, portal)  # app.info on the OAuth server is not under the portal's REST limit
        baseline = BaselineServer(sim.server_endpoint, app.client_id)
        baseline.start()
        try:
            await register_robot(sim, app, portal, f"{baseline.base_url}/robot")
            m = args.baseline_requests
            bodies = await capture_bodies(sim, portal, MODULE_CODE, len(levels) * (m + warmup), PROPERTIES)
            base: dict[str, Any] = {}
            ceiling: dict[str, Any] = {}
            for i, level in enumerate(levels):
                mine = bodies[i * (m + warmup) : (i + 1) * (m + warmup)]
                run = run_load(f"{baseline.base_url}/robot", mine, concurrency=level, warmup=warmup)
                base[str(level)] = summarize(run)
                if base[str(level)]["statuses"].get("200", 0) != base[str(level)]["n"]:
                    raise RuntimeError(f"baseline: not every call was validated: {base[str(level)]['statuses']}")
                run = run_load(
                    f"{baseline.base_url}/noop", mine, concurrency=level, warmup=warmup, clients=args.clients
                )
                ceiling[str(level)] = summarize(run)
        finally:
            baseline.stop()
        report["baseline"] = base
        report["client_ceiling"] = ceiling
    report["clients"] = args.clients
    return report


HEADERS = ["server", "concurrency", "acks/s", "p50 ms", "p99 ms", "acks/s vs baseline", "p99 vs baseline"]


def rows(report: dict[str, Any]) -> list[list[str]]:
    """The table's rows, shared by the console output and docs/benchmarks.md."""
    base = report["baseline"]
    out: list[list[str]] = []
    for db, data in report["ours"].items():
        for level, r in data["levels"].items():
            b = base[level]
            out.append(
                [
                    f"ours, {db}",
                    level,
                    f"{r['per_s']:.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    fmt_ratio(ratio(r["per_s"], b["per_s"])),
                    fmt_ratio(ratio(r["p99_ms"], b["p99_ms"])),
                ]
            )
    for label, group in (("baseline: parse + app.info", base), ("load ceiling: /noop", report["client_ceiling"])):
        for level, r in group.items():
            out.append([label, level, f"{r['per_s']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", "", ""])
    return out


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title="Intake: acknowledged robot calls (real HTTP, durable commit)")
    for col in HEADERS:
        table.add_column(col, justify="left" if col == "server" else "right")
    for row in rows(report):
        table.add_row(*row)
    console.print(table)
    sqlite16 = report["ours"]["sqlite"]["levels"].get("16")
    if sqlite16 is not None:
        console.print(
            f"target intake p99 <= {TARGET_P99_MS:g} ms at concurrency 16 on SQLite: "
            f"{verdict(sqlite16['p99_ms'] <= TARGET_P99_MS)} ({sqlite16['p99_ms']:.2f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few requests per level (smoke test)")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per level (ours)")
    parser.add_argument("--baseline-requests", type=int, default=1000, help="measured requests per level (baseline)")
    parser.add_argument("--levels", default="1,16,64", help="concurrency levels")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.baseline_requests = 40, 40
    report = asyncio.run(main_async(args))
    report["quick"] = args.quick
    render(report, Console())
    sqlite16 = report["ours"]["sqlite"]["levels"].get("16")
    report["target"] = {
        "intake_p99_ms_at_16_sqlite": TARGET_P99_MS,
        "met": bool(sqlite16 and sqlite16["p99_ms"] <= TARGET_P99_MS),
    }
    write_result(result_path("intake", args.json), report)


if __name__ == "__main__":
    main()
