"""End to end, idle: the simulator starts a robot until the portal has received its bizproc.event.send.

    python bench/e2e.py [--quick] [--runs N] [--json PATH]

Sequential runs (one at a time, the server idle in between) of the module robot `bench.echo` and of
the stored robot `bench.stored` (sandbox), measured two ways:

- in-process: RobotHarness, our app and the simulator over ASGI transports (no sockets);
- real ports: the simulator on SimulatorServer, our server as `b24robots serve` (uvicorn, SQLite).

Baseline (real ports): a handler that validates with app.info and answers with one
bizproc.event.send before it replies (no journal, no queue, nothing survives a crash) - the floor.
The portal's request limit is raised to 1000/s (simulator and our stored limit) so back-to-back runs
measure latency, not the 2/s limit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from b24robots.store.db import Database
from b24robots.store.journal import Journal
from b24robots.store.register import Register
from b24robots.testing import Portal, PortalSimulator, SimulatorServer
from b24robots.testing.app_fixtures import RobotHarness
from bench.common import (
    BaselineServer,
    OurServer,
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
    temp_dir,
    verdict,
    write_result,
)
from bench.robots import MODULE_CODE, PROPERTIES, STORED_CODE, STORED_SOURCE, router, stored_spec

TARGET_P50_MS = 100.0
RATE, BURST = 1000.0, 1000
WARMUP = 5


async def one_run(sim: PortalSimulator, portal: Portal, code: str, client_id: str | None = None) -> float:
    started = time.perf_counter()
    wf = await sim.start_robot(portal, code, properties=PROPERTIES, client_id=client_id)
    await wf.closed(timeout=30)
    elapsed = time.perf_counter() - started
    if wf.closed_by != "event" or float(wf.return_values["total"]) != round(PROPERTIES["amount"] * 1.2, 2):
        raise RuntimeError(f"{code}: unexpected outcome {wf.closed_by} {wf.return_values}")
    return elapsed


async def wait_idle(journal: Journal, timeout: float = 30.0) -> None:
    """Nothing queued, running or owed (the sender has also recorded the delivery)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(i.owed or i.state in ("queued", "running") for i in journal.recent(limit=20)):
            return
        await asyncio.sleep(0.005)
    raise TimeoutError("the server did not become idle")


async def series(
    sim: PortalSimulator, portal: Portal, code: str, runs: int, journal: Journal | None, client_id: str | None = None
) -> dict[str, float]:
    samples: list[float] = []
    for i in range(WARMUP + runs):
        elapsed = await one_run(sim, portal, code, client_id)
        if i >= WARMUP:
            samples.append(elapsed)
        if journal is not None:
            await wait_idle(journal)
        else:
            await asyncio.sleep(0.01)
    return latency_ms(samples)


async def in_process(runs: int) -> dict[str, Any]:
    async with RobotHarness(router, data_dir=temp_dir("b24r-bench-e2e-")) as h:
        h.svc.register.save(stored_spec(), STORED_SOURCE, author="bench")
        await h.install()
        lift_bucket(h.sim, h.portal, RATE, BURST)
        h.svc.installations.set_limits(h.portal.member_id, RATE, BURST)
        h.svc.rest.set_rate(h.portal.member_id, RATE, BURST)
        return {
            "module": await series(h.sim, h.portal, MODULE_CODE, runs, h.svc.journal),
            "stored": await series(h.sim, h.portal, STORED_CODE, runs, h.svc.journal),
        }


async def real_ports(runs: int) -> dict[str, Any]:
    sim = PortalSimulator()
    with SimulatorServer(sim):
        portal = sim.add_portal()
        port = free_port()
        server = OurServer(register_served_app(sim, port), port=port, oauth_url=sim.oauth_url)
        db = Database(server.database_url)
        db.migrate()
        Register(db).save(stored_spec(), STORED_SOURCE, author="bench")
        server.start()
        try:
            await install(sim, server.app, portal, [MODULE_CODE, STORED_CODE])
            lift_bucket(sim, portal, RATE, BURST)
            # our limit is read at start: store the new one, then restart (as an operator would)
            server.stop()
            server.cli("installations", "limits", portal.domain, str(RATE), str(BURST))
            server.start()
            journal = Journal(db)
            ours = {
                "module": await series(sim, portal, MODULE_CODE, runs, journal),
                "stored": await series(sim, portal, STORED_CODE, runs, journal),
            }
        finally:
            server.stop()
            db.dispose()

        base_portal = sim.add_portal()
        app = sim.register_app("bench e2e baseline")
        await sim.install_app(app, base_portal, notify=False)
        lift_bucket(sim, base_portal, RATE, BURST)
        baseline = BaselineServer(sim.server_endpoint, app.client_id)
        baseline.start()
        try:
            await register_robot(sim, app, base_portal, f"{baseline.base_url}/direct")
            ours["baseline"] = await series(sim, base_portal, MODULE_CODE, runs, None)
        finally:
            baseline.stop()
        await sim.aclose()
    return ours


HEADERS = ["path", "robot", "runs", "p50 ms", "p99 ms", "mean ms", "p50 vs baseline"]


def rows(report: dict[str, Any]) -> list[list[str]]:
    """The table's rows, shared by the console output and docs/benchmarks.md."""
    base = report["real_ports"]["baseline"]
    out: list[list[str]] = []
    paths = (("in_process", "in-process (ASGI transports)"), ("real_ports", "real ports (uvicorn + SimulatorServer)"))
    for path, label in paths:
        for robot in ("module", "stored"):
            r = report[path][robot]
            out.append(
                [
                    label,
                    robot,
                    str(r["n"]),
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['mean_ms']:.1f}",
                    fmt_ratio(ratio(r["p50_ms"], base["p50_ms"])),
                ]
            )
    out.append(
        [
            "real ports, baseline",
            "answer inline",
            str(base["n"]),
            f"{base['p50_ms']:.1f}",
            f"{base['p99_ms']:.1f}",
            f"{base['mean_ms']:.1f}",
            "1.00x",
        ]
    )
    return out


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title="End to end, idle: robot started -> bizproc.event.send received (sequential runs)")
    for col in HEADERS:
        table.add_column(col, justify="left" if col in ("path", "robot") else "right")
    for row in rows(report):
        table.add_row(*row)
    console.print(table)
    worst = max(report[p][r]["p50_ms"] for p in ("in_process", "real_ports") for r in ("module", "stored"))
    console.print(
        f"target end-to-end p50 <= {TARGET_P50_MS:g} ms idle: {verdict(worst <= TARGET_P50_MS)} "
        f"(worst p50 {worst:.1f} ms)"
    )


async def main_async(runs: int) -> dict[str, Any]:
    return {
        "machine": machine(),
        "runs": runs,
        "in_process": await in_process(runs),
        "real_ports": await real_ports(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few runs (smoke test)")
    parser.add_argument("--runs", type=int, default=200, help="measured runs per robot and path")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.runs = 5
    report = asyncio.run(main_async(args.runs))
    report["quick"] = args.quick
    render(report, Console())
    worst = max(report[p][r]["p50_ms"] for p in ("in_process", "real_ports") for r in ("module", "stored"))
    report["target"] = {"p50_ms": TARGET_P50_MS, "met": worst <= TARGET_P50_MS}
    write_result(result_path("e2e", args.json), report)


if __name__ == "__main__":
    main()
