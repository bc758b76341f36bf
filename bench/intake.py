"""Intake: acknowledged robot calls per second and acknowledgement latency, durable commit, real HTTP.

    python bench/intake.py [--quick] [--requests N] [--baseline-requests N] [--levels 1,16,64]
                           [--clients K] [--no-postgres] [--json PATH]
    python bench/intake.py --generator wrk [--duration S] [--levels 1,16,64] [--no-postgres]

`--generator wrk`: Debian's `wrk` pinned to core 1 (taskset), the server pinned to core 0, a Lua body
script giving each request its own event_token (bench/wrkload.py); each level runs `--duration` seconds
against ours and against `/noop` (the ceiling: the same generator and HTTP stack, a handler that only
reads the body) in the same run. After each run the journal rows with that run's tokens are counted and
must cover every acknowledged call.

Ours: `b24robots serve bench.robots:router --no-workers` (uvicorn, 127.0.0.1) on SQLite and on a
durable PostgreSQL; an answer means the call is committed to the journal. Baseline: a minimal
FastAPI handler that validates each call with `app.info` against the simulator (served on a real
port) and stores nothing. Bodies are the simulator's own robot calls (fresh tokens, unique
event_token). Load comes from bench/load.py in separate processes.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from b24robots.store.db import Database
from b24robots.store.journal import Journal
from b24robots.store.models import InvocationRow
from b24robots.testing import PortalSimulator, SimulatorServer
from bench import pg, wrkload
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
SERVER_CORE, LOAD_CORE = 0, 1
TARGETS = {"sqlite": 0.5, "postgresql": 0.4}  # acks/s at concurrency 16 as a share of the /noop ceiling
TARGET_P99_VS_CEILING = 3.0
TARGET_CPU_MS = 1.0  # server CPU per acknowledged call at concurrency 16 (issue 20)


def pin(pid: int, core: int) -> None:
    """Every thread of `pid` onto `core` (the load generator gets the other one)."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], capture_output=True, check=True)


def rows_with_prefix(database_url: str, prefix: str) -> int:
    db = Database(database_url)
    try:
        with db.read() as s:
            count = s.scalar(
                select(func.count()).select_from(InvocationRow).where(InvocationRow.event_token.like(prefix + "%"))
            )
    finally:
        db.dispose()
    return int(count or 0)


def checked(run: dict[str, Any], stored: int, concurrency: int, label: str) -> dict[str, Any]:
    """Every acknowledged call is stored; at most the calls still in flight when wrk stopped are extra."""
    if stored < run["ok"] or stored > run["ok"] + run["errors"] + concurrency:
        raise RuntimeError(f"{label}: {run['ok']} calls acknowledged but {stored} rows in the journal")
    return {**run, "rows": stored}


async def wrk_ours(
    sim: PortalSimulator, label: str, database_url: str, levels: list[int], duration: float
) -> tuple[dict[str, Any], bytes]:
    """Ours at each level; also the captured body (the ceiling runs post the same one)."""
    portal = sim.add_portal()
    port = free_port()
    app = register_served_app(sim, port, f"bench intake wrk {label}")
    server = OurServer(app, database_url=database_url, workers=False, port=port, oauth_url=sim.oauth_url)
    server.start()
    out: dict[str, Any] = {}
    try:
        await install(sim, server.app, portal, [MODULE_CODE])
        body = (await capture_bodies(sim, portal, MODULE_CODE, 1, PROPERTIES))[0]
        pin(server.pid, SERVER_CORE)
        url = f"{server.base_url}/b24/robot"
        for level in levels:
            wrkload.run_wrk(url, body, token_prefix=f"warm{level}.", concurrency=level, duration=1, core=LOAD_CORE)
            prefix = f"run{level}."
            run = wrkload.run_wrk(
                url,
                body,
                token_prefix=prefix,
                concurrency=level,
                duration=duration,
                core=LOAD_CORE,
                server_pid=server.pid,
            )
            out[str(level)] = checked(run, rows_with_prefix(server.database_url, prefix), level, label)
    finally:
        server.stop()
    return out, body


async def wrk_main(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.levels.split(",")]
    sim = PortalSimulator()
    report: dict[str, Any] = {"machine": machine(), "levels": levels, "duration_s": args.duration, "generator": "wrk"}
    with SimulatorServer(sim):
        sqlite, body = await wrk_ours(sim, "sqlite", "", levels, args.duration)
        ours: dict[str, Any] = {"sqlite": sqlite}
        if args.postgres and pg.available():
            server = pg.DurablePostgres()
            server.start()
            try:
                report["postgres_settings"] = server.settings()
                url = server.new_database("bench_intake_wrk")
                ours["postgresql"], _ = await wrk_ours(sim, "postgresql", url, levels, args.duration)
            finally:
                server.stop()
        else:
            report["postgres_skipped"] = "PostgreSQL not installed" if args.postgres else "--no-postgres"
        report["ours"] = ours
        noop = BaselineServer(sim.server_endpoint, "ceiling")
        noop.start()
        ceiling: dict[str, Any] = {}
        try:
            assert noop.proc is not None
            pin(noop.proc.pid, SERVER_CORE)
            for level in levels:
                ceiling[str(level)] = wrkload.run_wrk(
                    f"{noop.base_url}/noop",
                    body,
                    token_prefix=f"noop{level}.",
                    concurrency=level,
                    duration=args.duration,
                    core=LOAD_CORE,
                    server_pid=noop.proc.pid,
                )
        finally:
            noop.stop()
        report["ceiling"] = ceiling
    return report


WRK_HEADERS = ["server", "conc.", "acks/s", "p50 ms", "p99 ms", "acks/s vs /noop", "p99 vs /noop", "CPU ms/ack", "rows"]


def wrk_rows(report: dict[str, Any]) -> list[list[str]]:
    ceiling = report["ceiling"]
    out: list[list[str]] = []

    def cpu(r: dict[str, Any]) -> str:
        return f"{r['cpu_ms_per_ack']:.2f}" if r.get("cpu_ms_per_ack") is not None else ""

    for db, levels in report["ours"].items():
        for level, r in levels.items():
            c = ceiling[level]
            out.append(
                [
                    f"ours, {db}",
                    level,
                    f"{r['per_s']:.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    fmt_ratio(ratio(r["per_s"], c["per_s"])),
                    fmt_ratio(ratio(r["p99_ms"], c["p99_ms"])),
                    cpu(r),
                    f"{r['rows']} / {r['ok']} acked",
                ]
            )
    for level, r in ceiling.items():
        out.append(["ceiling: /noop", level, f"{r['per_s']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", "", "",
                    cpu(r), ""])  # fmt: skip
    return out


def wrk_verdicts(report: dict[str, Any]) -> list[tuple[str, bool]]:
    ceiling = report["ceiling"].get("16")
    out: list[tuple[str, bool]] = []
    if ceiling is None:
        return out
    for db, share in TARGETS.items():
        r = report["ours"].get(db, {}).get("16")
        if r is None:
            continue
        got = r["per_s"] / ceiling["per_s"] if ceiling["per_s"] else 0.0
        out.append((f"{db} c16 acks/s >= {share:g} x /noop: {got:.2f}x", got >= share))
        if db == "sqlite":
            p99 = r["p99_ms"] / ceiling["p99_ms"] if ceiling["p99_ms"] else 0.0
            out.append((f"sqlite c16 p99 <= {TARGET_P99_VS_CEILING:g} x /noop p99: {p99:.2f}x", p99 <= 3.0))
        cpu = r.get("cpu_ms_per_ack")
        if cpu is not None:
            out.append((f"{db} c16 CPU per ack <= {TARGET_CPU_MS:g} ms: {cpu:.2f} ms", cpu <= TARGET_CPU_MS))
    return out


def wrk_render(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Intake under wrk (pinned to core {LOAD_CORE}; server on core {SERVER_CORE}; durable commit)")
    for col in WRK_HEADERS:
        table.add_column(col, justify="left" if col == "server" else "right")
    for row in wrk_rows(report):
        table.add_row(*row)
    console.print(table)
    for text, ok in wrk_verdicts(report):
        console.print(f"target {text}: {verdict(ok)}")


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
    parser.add_argument("--generator", choices=["python", "wrk"], default="python", help="the load generator")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (wrk)")
    args = parser.parse_args()
    if args.generator == "wrk":
        if not wrkload.available():
            raise SystemExit("wrk is not installed: apt-get install wrk, or use --generator python")
        if args.quick:
            args.duration = 2.0
        report = asyncio.run(wrk_main(args))
        report["quick"] = args.quick
        wrk_render(report, Console(width=160))
        report["targets"] = {text: ok for text, ok in wrk_verdicts(report)}
        write_result(result_path("intake_wrk", args.json), report)
        return
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
