"""Delivery: answers per second to a portal limited to 2 requests/s (burst 50), and fairness.

    python bench/delivery.py [--quick] [--backlog N] [--baseline-backlog N] [--portals P] [--per-portal N]
                             [--served-only] [--json PATH]

Our server and the portal simulator run in one process (RobotHarness, SQLite, real time; the
simulator's leaky bucket is real-time). A backlog of answered invocations is built through the
normal path (robot calls to the intake, a worker runs them); then the clock starts.

- ours, cold bucket: the batched Sender drains the backlog with the portal's burst still unused;
- ours, sustained: the same after the bucket was filled by `burst` calls through the same client;
- baseline, sustained: one `bizproc.event.send` per answer via the same RestClient and limiter
  (a shorter backlog: at 2/s it is slow by design), journal bookkeeping as the Sender does it;
- fairness: P portals x N invocations, created round-robin, drained together; per-portal drain time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from b24robots.config import Settings
from b24robots.jobs.sender import Sender, commands_for
from b24robots.jobs.wakeup import Wakeup
from b24robots.jobs.worker import Worker, owner_id
from b24robots.testing import Portal, PortalSimulator, SimulatorServer, Workflow
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.web.services import build_services
from bench.common import (
    ROOT,
    OurServer,
    fmt_ratio,
    free_port,
    install,
    machine,
    percentile,
    ratio,
    register_served_app,
    result_path,
    temp_dir,
    verdict,
    write_result,
)
from bench.robots import MODULE_CODE, PROPERTIES, router

TARGET_PER_S = 90.0


async def backlog(h: RobotHarness, portals: list[Portal], per_portal: int) -> list[Workflow]:
    """Start `per_portal` robots on every portal (round-robin) and let a worker answer them all."""
    workflows: list[Workflow] = []
    for _ in range(per_portal):
        for portal in portals:
            wf = await h.sim.start_robot(portal, MODULE_CODE, properties=PROPERTIES)
            if wf.delivery is None or wf.delivery.status_code != 200:
                raise RuntimeError(f"the intake refused a robot call: {wf.delivery}")
            workflows.append(wf)
    svc = h.svc
    worker = Worker(svc.journal, svc.installations, svc.runner, svc.rest, Wakeup(), concurrency=16, poll=0.05)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        counts = {state: n for state, _, n in svc.journal.counts()}
        if counts.get("queued", 0) == 0 and counts.get("running", 0) == 0:
            break
        await asyncio.sleep(0.05)
    await worker.stop()
    await task
    owed = [i for i in svc.journal.recent(limit=len(workflows) + 100) if i.owed]
    if len(owed) != len(workflows):
        raise RuntimeError(f"expected {len(workflows)} owed answers, found {len(owed)}")
    return workflows


async def fill_bucket(h: RobotHarness, portal: Portal) -> None:
    """Top the portal's bucket up to its burst through our client, so the sender starts at the sustained rate."""
    bucket = h.sim.portal(portal).bucket
    level = max(0.0, h.svc.buckets.tat(portal.member_id) - time.time()) * bucket.rate
    for _ in range(max(0, int(bucket.burst - level) - 1)):
        await h.svc.rest.call(portal.member_id, "app.info")


def calls_503(h: RobotHarness, since: int) -> int:
    return sum(1 for c in list(h.sim.calls)[since:] if c.status == 503)


async def drain_with_sender(h: RobotHarness, workflows: list[Workflow]) -> dict[str, Any]:
    svc = h.svc
    since = len(h.sim.calls)
    sender = Sender(svc.journal, svc.installations, svc.rest, Wakeup(), poll=0.05)
    started = time.time()
    task = asyncio.create_task(sender.run())
    await asyncio.gather(*(wf.closed(timeout=600) for wf in workflows))
    await sender.stop()
    await task
    return summarize(h, workflows, started, since, requests=sender.batches)


def summarize(h: RobotHarness, workflows: list[Workflow], started: float, since: int, requests: int) -> dict[str, Any]:
    closed = [wf.closed_at or started for wf in workflows]
    elapsed = max(closed) - started
    if not all(wf.closed_by == "event" for wf in workflows):
        raise RuntimeError("some workflows were not closed by our answer")
    return {
        "answers": len(workflows),
        "seconds": elapsed,
        "per_s": len(workflows) / elapsed if elapsed > 0 else 0.0,
        "requests": requests,
        "http_503": calls_503(h, since),
    }


async def drain_one_by_one(h: RobotHarness, portal: Portal, workflows: list[Workflow]) -> dict[str, Any]:
    """The baseline: one bizproc.event.send per answer, same client, limiter and journal bookkeeping."""
    svc = h.svc
    since = len(h.sim.calls)
    owner = owner_id("baseline")
    inst = svc.installations.get(portal.member_id)
    started = time.time()
    sent = 0
    while True:
        invs = await asyncio.to_thread(svc.journal.claim_deliveries, inst.id, owner, limit=1, lease=120.0)
        if not invs:
            break
        # the same answer the Sender would put into a batch (bench.echo writes no ctx.log lines)
        method, params = commands_for(invs[0], svc.journal.original_token(invs[0]))[str(invs[0].id)]
        await svc.rest.call(portal.member_id, method, params)
        await asyncio.to_thread(svc.journal.delivered, [invs[0].id], owner)
        sent += 1
    await asyncio.gather(*(wf.closed(timeout=60) for wf in workflows))
    return summarize(h, workflows, started, since, requests=sent)


async def fairness(h: RobotHarness, portals: int, per_portal: int) -> dict[str, Any]:
    extra = [h.sim.add_portal() for _ in range(portals)]
    for portal in extra:
        await h.sim.install_app(h.app, portal)
    await h.svc.wait_syncs()
    t0 = time.monotonic()
    workflows = await backlog(h, extra, per_portal)
    setup = time.monotonic() - t0
    since = len(h.sim.calls)
    sender = Sender(h.svc.journal, h.svc.installations, h.svc.rest, Wakeup(), poll=0.05)
    started = time.time()
    task = asyncio.create_task(sender.run())
    await asyncio.gather(*(wf.closed(timeout=600) for wf in workflows))
    await sender.stop()
    await task
    return {**spread(workflows, started, since, h.sim, sender.batches), "portals": portals, "per_portal": per_portal,
            "setup_s": setup}  # fmt: skip


async def fairness_served(portals: int, per_portal: int) -> dict[str, Any]:
    """The fairness run with the portals out of our process, as real portals are: the simulator serves them
    on a port from this process, our intake (`b24robots serve --no-workers`) stores the robot calls, and a
    process of our own (`--drain-child`: a worker runs them all, then the sender drains) sends the answers
    over real HTTP. So our sender's CPU is not shared with the portals' (in one process the simulator's
    work on the batches was most of it). Each portal's REST endpoint is on a loopback address of its own
    (one origin per portal, as cloud portals are), so our client keeps its connections per portal as it
    would in production."""
    sim = PortalSimulator()
    with SimulatorServer(sim, addresses=portals):  # each portal at an origin of its own, as in the cloud
        port = free_port()
        app = register_served_app(sim, port, "bench delivery fairness")
        server = OurServer(app, workers=False, port=port, oauth_url=sim.oauth_url)
        server.start()
        try:
            extra = [sim.add_portal() for _ in range(portals)]
            for portal in extra:
                await install(sim, server.app, portal, [MODULE_CODE])
            t0 = time.monotonic()
            workflows: list[Workflow] = []
            for _ in range(per_portal):
                for portal in extra:
                    wf = await sim.start_robot(portal, MODULE_CODE, properties=PROPERTIES)
                    if wf.delivery is None or wf.delivery.status_code != 200:
                        raise RuntimeError(f"the intake refused a robot call: {wf.delivery}")
                    workflows.append(wf)
        finally:
            server.stop()
        since = len(sim.calls)
        log = server.data_dir / "drain.log"
        with log.open("ab") as err:
            child = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--drain-child"],
                env=server.env(),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        assert child.stdin is not None and child.stdout is not None
        try:
            line = await asyncio.to_thread(child.stdout.readline)
            if not line:
                raise RuntimeError(f"the drain process ended early: {log.read_text(errors='replace')[-2000:]}")
            start = json.loads(line)
            if start["owed"] != len(workflows):
                raise RuntimeError(f"expected {len(workflows)} owed answers, found {start['owed']}")
            setup = time.monotonic() - t0
            portal_cpu = time.process_time()  # this process: the simulated portals answering the batches
            deadline = time.monotonic() + 600
            while not all(wf.closed_at for wf in workflows):  # closed on the simulator's own thread
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError(f"not every workflow was answered: {log.read_text(errors='replace')[-2000:]}")
                await asyncio.sleep(0.02)
            portal_cpu = time.process_time() - portal_cpu
            child.stdin.write(b"stop\n")
            child.stdin.flush()
            done = json.loads(await asyncio.to_thread(child.stdout.readline))
        finally:
            if child.poll() is None:
                child.stdin.close()
                child.wait(timeout=30)
        result = spread(workflows, float(start["at"]), since, sim, done["batches"])
        return {**result, "portals": portals, "per_portal": per_portal, "setup_s": setup, "sender_cpu_s": done["cpu_s"],
                "portals_cpu_s": portal_cpu}  # fmt: skip


def spread(workflows: list[Workflow], started: float, since: int, sim: PortalSimulator, batches: int) -> dict[str, Any]:
    """Per-portal drain times (until a portal's last answer) and first answers, from `started`."""
    if not all(wf.closed_by == "event" for wf in workflows):
        raise RuntimeError("some workflows were not closed by our answer")
    by_portal: dict[str, list[float]] = {}
    for wf in workflows:
        by_portal.setdefault(wf.domain, []).append((wf.closed_at or started) - started)
    drains = [max(v) for v in by_portal.values()]
    firsts = [min(v) for v in by_portal.values()]
    total = max(drains)
    return {
        "answers": len(workflows),
        "seconds": total,
        "per_s": len(workflows) / total if total > 0 else 0.0,
        "drain_min_s": min(drains),
        "drain_p50_s": percentile(drains, 0.5),
        "drain_max_s": max(drains),
        "drain_max_min_ratio": max(drains) / min(drains) if min(drains) > 0 else None,
        "first_answer_p50_s": percentile(firsts, 0.5),
        "first_answer_max_s": max(firsts),
        "batches": batches,
        "http_503": sum(1 for c in list(sim.calls)[since:] if c.status == 503),
    }


async def drain_child() -> None:
    """`--drain-child`: our side of the served fairness run, configured by the B24R_* environment.

    A worker answers every queued call (the answers are then owed), then one line `{"at", "owed"}` on
    stdout and the sender starts; on a line on stdin it stops and writes `{"batches", "cpu_s"}`."""
    settings = Settings()
    svc = build_services(settings, router)
    try:
        worker = Worker(svc.journal, svc.installations, svc.runner, svc.rest, Wakeup(), concurrency=16, poll=0.05)
        task = asyncio.create_task(worker.run())
        while True:
            counts = {state: n for state, _, n in svc.journal.counts()}
            if counts.get("queued", 0) == 0 and counts.get("running", 0) == 0:
                break
            await asyncio.sleep(0.05)
        await worker.stop()
        await task
        owed = sum(1 for i in svc.journal.recent(limit=10**7) if i.owed)
        sender = Sender(
            svc.journal, svc.installations, svc.rest, Wakeup(), poll=0.05, concurrency=settings.delivery_concurrency
        )
        cpu = time.process_time()
        print(json.dumps({"at": time.time(), "owed": owed}), flush=True)
        sending = asyncio.create_task(sender.run())
        await asyncio.to_thread(sys.stdin.readline)
        await sender.stop()
        await sending
        print(json.dumps({"batches": sender.batches, "cpu_s": time.process_time() - cpu}), flush=True)
    finally:
        await svc.stop()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.served_only:
        return {"machine": machine(), "fairness_served": await fairness_served(args.portals, args.per_portal)}
    data_dir = temp_dir("b24r-bench-delivery-")
    async with RobotHarness(router, data_dir=data_dir, workers=False, sandbox=False) as h:
        await h.install()
        bucket = h.sim.portal(h.portal).bucket
        report: dict[str, Any] = {"machine": machine(), "rate": bucket.rate, "burst": bucket.burst}
        wfs = await backlog(h, [h.portal], args.backlog)
        report["ours_cold"] = await drain_with_sender(h, wfs)
        wfs = await backlog(h, [h.portal], args.backlog)
        await fill_bucket(h, h.portal)
        report["ours_sustained"] = await drain_with_sender(h, wfs)
        wfs = await backlog(h, [h.portal], args.baseline_backlog)
        await fill_bucket(h, h.portal)
        report["baseline_sustained"] = await drain_one_by_one(h, h.portal, wfs)
        report["fairness"] = await fairness(h, args.portals, args.per_portal)
    report["fairness_served"] = await fairness_served(args.portals, args.per_portal)
    return report


def render(report: dict[str, Any], console: Console) -> None:
    if "ours_cold" in report:
        render_one_portal(report, console)
    render_served(report["fairness_served"], console)


def render_one_portal(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Delivery to one portal ({report['rate']:g} requests/s, burst {report['burst']})")
    for col in ("sender", "answers", "seconds", "answers/s", "HTTP requests", "503s", "vs baseline"):
        table.add_column(col, justify="left" if col == "sender" else "right")
    base = report["baseline_sustained"]
    rows = [
        ("ours, batched, cold bucket", report["ours_cold"]),
        ("ours, batched, sustained", report["ours_sustained"]),
        ("baseline, one call per answer, sustained", base),
    ]
    for name, r in rows:
        table.add_row(
            name,
            str(r["answers"]),
            f"{r['seconds']:.1f}",
            f"{r['per_s']:.1f}",
            str(r["requests"]),
            str(r["http_503"]),
            fmt_ratio(ratio(r["per_s"], base["per_s"])),
        )
    console.print(table)
    f = report["fairness"]
    fair = Table(title=f"Fairness: {f['portals']} portals x {f['per_portal']} answers, drained together")
    for col in ("answers/s", "total s", "drain min s", "drain p50 s", "drain max s", "max/min", "first max s", "503s"):
        fair.add_column(col, justify="right")
    fair.add_row(
        f"{f['per_s']:.0f}",
        f"{f['seconds']:.1f}",
        f"{f['drain_min_s']:.2f}",
        f"{f['drain_p50_s']:.2f}",
        f"{f['drain_max_s']:.2f}",
        fmt_ratio(f["drain_max_min_ratio"]),
        f"{f['first_answer_max_s']:.2f}",
        str(f["http_503"]),
    )
    console.print(fair)
    s = report["ours_sustained"]
    console.print(
        f"target >= {TARGET_PER_S:g} answers/s per portal at 2/s burst 50 with zero 503s: "
        f"{verdict(rate_met(report))} (sustained {s['per_s']:.1f}/s, cold {report['ours_cold']['per_s']:.1f}/s)"
    )


def rate_met(report: dict[str, Any]) -> bool:
    s = report["ours_sustained"]
    return bool(s["per_s"] >= TARGET_PER_S and s["http_503"] == 0 and report["ours_cold"]["http_503"] == 0)


def render_served(f: dict[str, Any], console: Console) -> None:
    served = Table(
        title=f"Fairness, portals served from another process: {f['portals']} portals x {f['per_portal']} answers"
    )
    for col in (
        "answers/s", "total s", "drain min s", "drain p50 s", "drain max s", "max/min",
        "first p50 s", "first max s", "sender CPU s", "portals CPU s", "503s",
    ):  # fmt: skip
        served.add_column(col, justify="right")
    served.add_row(
        f"{f['per_s']:.0f}",
        f"{f['seconds']:.1f}",
        f"{f['drain_min_s']:.2f}",
        f"{f['drain_p50_s']:.2f}",
        f"{f['drain_max_s']:.2f}",
        fmt_ratio(f["drain_max_min_ratio"]),
        f"{f['first_answer_p50_s']:.2f}",
        f"{f['first_answer_max_s']:.2f}",
        f"{f['sender_cpu_s']:.1f}",
        f"{f['portals_cpu_s']:.1f}",
        str(f["http_503"]),
    )
    console.print(served)
    console.print(
        f"target fairness max/min <= 1.2 and every first answer within 1 s (served): "
        f"{verdict((f['drain_max_min_ratio'] or 99) <= 1.2 and f['first_answer_max_s'] <= 1.0)} "
        f"({fmt_ratio(f['drain_max_min_ratio'])}, {f['first_answer_max_s']:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny backlogs (smoke test)")
    parser.add_argument("--backlog", type=int, default=2000, help="answers owed to one portal (ours)")
    parser.add_argument("--baseline-backlog", type=int, default=60, help="answers for the one-by-one baseline")
    parser.add_argument("--portals", type=int, default=100, help="portals in the fairness run")
    parser.add_argument("--per-portal", type=int, default=100, help="answers per portal in the fairness run")
    parser.add_argument(
        "--served-only", action="store_true", help="only the fairness run with the portals served from another process"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--drain-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain_child:
        asyncio.run(drain_child())
        return
    if args.quick:
        args.backlog, args.baseline_backlog, args.portals, args.per_portal = 150, 3, 4, 10
    report = asyncio.run(main_async(args))
    report["quick"] = args.quick
    render(report, Console())
    if "ours_sustained" in report:
        report["target"] = {"answers_per_s": TARGET_PER_S, "met": rate_met(report)}
    write_result(result_path("delivery", args.json), report)


if __name__ == "__main__":
    main()
