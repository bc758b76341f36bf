"""Memory: resident set size of `b24robots serve` (SQLite, module robot app), idle and after load.

    python bench/memory.py [--quick] [--requests N] [--json PATH]

VmRSS / VmHWM from /proc/<pid>/status of the server process (its sandbox pool children are
reported apart). Load: N robot calls from the simulator over real HTTP (16 at a time), each run by
the worker and answered through the sender, until every workflow is closed. Baseline in the same
run: the minimal FastAPI + uvicorn handler (bench/baseline_app.py) after the same number of calls.
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

from b24robots.testing import Portal, PortalSimulator, SimulatorServer, Workflow
from bench.common import (
    BaselineServer,
    OurServer,
    children,
    fmt_ratio,
    free_port,
    install,
    lift_bucket,
    machine,
    ratio,
    register_robot,
    register_served_app,
    result_path,
    rss_kib,
    write_result,
)
from bench.robots import MODULE_CODE, PROPERTIES


def snapshot(pid: int) -> dict[str, int]:
    kids = children(pid)
    return {
        "rss_kib": rss_kib(pid),
        "hwm_kib": rss_kib(pid, "VmHWM"),
        "children": len(kids),
        "children_rss_kib": sum(rss_kib(k) for k in kids),
    }


async def load(sim: PortalSimulator, portal: Portal, count: int, wait_closed: bool) -> tuple[float, int]:
    """Start `count` robots, 16 at a time; with `wait_closed` also wait until every answer arrived.

    Returns the seconds taken and how many calls were not answered 200.
    """
    gate = asyncio.Semaphore(16)
    started = time.monotonic()

    async def one() -> Workflow:
        async with gate:
            wf = await sim.start_robot(portal, MODULE_CODE, properties=PROPERTIES)
            return wf

    workflows = await asyncio.gather(*(one() for _ in range(count)))
    refused = sum(1 for wf in workflows if wf.delivery is None or wf.delivery.status_code != 200)
    if wait_closed:
        if refused:
            raise RuntimeError(f"{refused} robot calls were refused by our server")
        await asyncio.gather(*(wf.closed(timeout=600) for wf in workflows))
        if not all(wf.closed_by == "event" for wf in workflows):
            raise RuntimeError("some workflows were not closed by the server's answer")
    return time.monotonic() - started, refused


async def main_async(requests: int, settle: float) -> dict[str, Any]:
    sim = PortalSimulator()
    report: dict[str, Any] = {"machine": machine(), "requests": requests}
    with SimulatorServer(sim):
        portal = sim.add_portal()
        port = free_port()
        server = OurServer(register_served_app(sim, port), port=port, oauth_url=sim.oauth_url)
        server.start()
        try:
            await install(sim, server.app, portal, [MODULE_CODE])
            await asyncio.sleep(settle)
            idle = snapshot(server.pid)
            seconds, _ = await load(sim, portal, requests, wait_closed=True)
            await asyncio.sleep(settle)
            loaded = snapshot(server.pid)
            report["ours"] = {"idle": idle, "after_load": loaded, "load_seconds": seconds}
        finally:
            server.stop()

        base_portal = sim.add_portal()
        app = sim.register_app("bench memory baseline")
        await sim.install_app(app, base_portal, notify=False)
        lift_bucket(sim, base_portal)
        baseline = BaselineServer(sim.server_endpoint, app.client_id)
        baseline.start()
        try:
            assert baseline.proc is not None
            await register_robot(sim, app, base_portal, f"{baseline.base_url}/robot")
            await asyncio.sleep(settle)
            idle = snapshot(baseline.proc.pid)
            seconds, refused = await load(sim, base_portal, requests, wait_closed=False)
            await asyncio.sleep(settle)
            report["baseline"] = {
                "idle": idle,
                "after_load": snapshot(baseline.proc.pid),
                "load_seconds": seconds,
                "refused": refused,
                "log_tail": baseline.log.read_text(errors="replace")[-1500:] if refused else "",
            }
        finally:
            baseline.stop()
        await sim.aclose()
    return report


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def render(report: dict[str, Any], console: Console) -> None:
    n = report["requests"]
    table = Table(title=f"Resident memory (VmRSS, MiB): idle and after {n} robot calls")
    for col in ("process", "idle", f"after {n}", "peak (VmHWM)", "descendants (sandbox)", "idle vs baseline"):
        table.add_column(col, justify="left" if col == "process" else "right")
    ours, base = report["ours"], report["baseline"]
    table.add_row(
        "b24robots serve (SQLite, workers, sender)",
        mib(ours["idle"]["rss_kib"]),
        mib(ours["after_load"]["rss_kib"]),
        mib(ours["after_load"]["hwm_kib"]),
        f"{ours['after_load']['children']} x, {mib(ours['after_load']['children_rss_kib'])} total",
        fmt_ratio(ratio(ours["idle"]["rss_kib"], base["idle"]["rss_kib"])),
    )
    table.add_row(
        "baseline FastAPI + uvicorn",
        mib(base["idle"]["rss_kib"]),
        mib(base["after_load"]["rss_kib"]),
        mib(base["after_load"]["hwm_kib"]),
        "-",
        "1.00x",
    )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few calls (smoke test)")
    parser.add_argument("--requests", type=int, default=5000, help="robot calls of the load phase")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.requests = 60
    report = asyncio.run(main_async(args.requests, 0.3 if args.quick else 2.0))
    report["quick"] = args.quick
    render(report, Console())
    write_result(result_path("memory", args.json), report)


if __name__ == "__main__":
    main()
