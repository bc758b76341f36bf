"""Overhead of `ctx.http` from stored code (through the parent) against a direct httpx call to the same server.

    python bench/connections.py [--calls N] [--rounds N] [--quick] [--json PATH]

The far side is one small HTTP app (uvicorn, in a subprocess of its own so it does not share this
process' interpreter lock) answering a short JSON document. Three callers ask it the same
`GET /api/item?inn=...` with the same bearer token over a kept-alive connection:

- baseline: a plain `httpx.Client` in this process;
- a module robot's `ctx.http("erp")`: the connection hub in-process (origin rule, gate, budget,
  auth added by the server, a journal record per call);
- a stored robot's `ctx.http("erp")`: the code runs in the sandbox pool (pool size 2, the OS
  isolation this machine allows) and each call is a frame to the parent, which makes it through the
  same hub (as jobs/runner.py's `_connection_call` does) and sends the answer back.

The connection's rate limit (default 10 calls/s) is raised out of the way; its concurrency cap stays.

Each call is timed where the caller sees it (inside the sandbox for stored code). The three run in
interleaved rounds so load from elsewhere on the machine hits them alike. "added" is ours minus the
baseline at the same percentile.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from rich.console import Console
from rich.table import Table

from b24robots.connections import ConnectionHub
from b24robots.sandbox import SandboxPool
from b24robots.sandbox.proxy import RunProxy
from b24robots.store.connections import ConnectionStore
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.migrate import upgrade
from bench.common import (
    ROOT,
    fmt_ratio,
    free_port,
    latency_ms,
    machine,
    ratio,
    result_path,
    spawn,
    stop_process,
    temp_dir,
    wait_http,
    write_result,
)

TOKEN = "bench-token-9f8e7d6c"
INN = "7701234567"
TARGET_ADDED_P50_MS = 2.0
HEADERS = ["caller", "calls", "p50 ms", "p99 ms", "mean ms", "p50 added ms", "p99 added ms", "p50 vs baseline"]

STORED = """
import time


def run(inputs, ctx):
    erp = ctx.http("erp")
    took = []
    for _ in range(inputs["calls"]):
        started = time.perf_counter()
        answer = erp.get("item", params={"inn": inputs["inn"]})
        took.append(time.perf_counter() - started)
        if answer.status != 200 or answer.json()["inn"] != inputs["inn"]:
            raise ValueError(f"unexpected answer {answer.status}")
    return {"took": took}
"""


# --- the far side -------------------------------------------------------------------------------------
def serve(port: int) -> None:
    """The far side: answers /api/item with a short JSON document when the bearer token is right."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def item(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Response(status_code=401)
        inn = request.query_params.get("inn", "")
        return JSONResponse({"inn": inn, "name": "ООО Ромашка", "balance": "100.50"})

    async def healthz(request: Request) -> Response:
        return Response("ok")

    app = Starlette(routes=[Route("/api/item", item), Route("/healthz", healthz)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class FarSide:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FarSide:
        log = temp_dir("b24r-far-") / "far.log"
        cmd = [sys.executable, str(ROOT / "bench" / "connections.py"), "--serve", str(self.port)]
        self.proc = spawn(cmd, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, log)
        wait_http(f"{self.origin}/healthz", proc=self.proc, log=log)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# --- the callers ----------------------------------------------------------------------------------------
def direct(client: httpx.Client, calls: int) -> list[float]:
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = client.get("/api/item", params={"inn": INN})
        took.append(time.perf_counter() - started)
        if answer.status_code != 200 or answer.json()["inn"] != INN:
            raise RuntimeError(f"the far side answered {answer.status_code}")
    return took


def module(hub: ConnectionHub, calls: int) -> list[float]:
    scope = hub.scope(robot="bench.module", declared=["erp"], member_id="", deadline=time.monotonic() + 60)
    erp = scope.http("erp")
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = erp.get("item", params={"inn": INN})
        took.append(time.perf_counter() - started)
        if answer.status != 200 or answer.json()["inn"] != INN:
            raise RuntimeError(f"the far side answered {answer.status}")
    return took


def stored(pool: SandboxPool, hub: ConnectionHub, calls: int) -> list[float]:
    scope = hub.scope(robot="bench.stored", declared=["erp"], member_id="", deadline=time.monotonic() + 60)
    kinds = {"http": scope.http, "1c": scope.onec, "sql": scope.sql}

    def on_connection(kind: str, name: str, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return getattr(kinds[kind](name), op)(*args, **kwargs)

    proxy = RunProxy(on_connection=on_connection)
    scope.budget.left = proxy.time_left
    result = pool.run(STORED, {"calls": calls, "inn": INN}, context={"portal": "bench.example"}, proxy=proxy)
    took = result.outputs["took"]
    assert isinstance(took, list) and len(took) == calls
    return [float(t) for t in took]


# --- the run -------------------------------------------------------------------------------------------
def row(name: str, ours: dict[str, float], base: dict[str, float] | None) -> list[str]:
    cells = [name, str(ours["n"]), f"{ours['p50_ms']:.3f}", f"{ours['p99_ms']:.3f}", f"{ours['mean_ms']:.3f}"]
    if base is None:
        return [*cells, "", "", "1.00x"]
    return [
        *cells,
        f"{ours['p50_ms'] - base['p50_ms']:+.3f}",
        f"{ours['p99_ms'] - base['p99_ms']:+.3f}",
        fmt_ratio(ratio(ours["p50_ms"], base["p50_ms"])),
    ]


def rows(d: dict[str, Any]) -> list[list[str]]:
    base = d["direct"]
    return [
        row("baseline: httpx.Client, direct", base, None),
        row("module robot: ctx.http in-process", d["module"], base),
        row("stored robot: ctx.http through the parent", d["stored"], base),
    ]


def measure(calls: int, rounds: int) -> dict[str, Any]:
    data_dir = temp_dir("b24r-bench-conn-")
    db = Database(f"sqlite:///{data_dir / 'b24robots.db'}")
    upgrade(db.engine)
    store = ConnectionStore(db, Vault.from_settings("bench-secret-key", data_dir))
    samples: dict[str, list[float]] = {"direct": [], "module": [], "stored": []}
    with FarSide() as far:
        # the rate limit is raised out of the way: what is measured is the path, not the default 10 calls/s
        settings = {"base_url": far.origin + "/api/", "auth": "bearer", "rate": 1_000_000, "burst": 1000}
        store.add("erp", "http", settings, {"token": TOKEN})
        hub = ConnectionHub(store)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=far.origin, headers=headers, timeout=10) as client, SandboxPool(2) as pool:
            # warm-up: connections opened, the pool's children forked, the engine built
            direct(client, 20)
            module(hub, 20)
            stored(pool, hub, 20)
            for _ in range(rounds):
                samples["direct"] += direct(client, calls)
                samples["module"] += module(hub, calls)
                samples["stored"] += stored(pool, hub, calls)
            isolation = pool.health()["isolation"]
        hub.close()
    db.dispose()
    out: dict[str, Any] = {name: latency_ms(values) for name, values in samples.items()}
    added = out["stored"]["p50_ms"] - out["direct"]["p50_ms"]
    out.update(
        calls_per_round=calls,
        rounds=rounds,
        isolation=isolation,
        added_p50_ms=added,
        added_p99_ms=out["stored"]["p99_ms"] - out["direct"]["p99_ms"],
        target={"added_p50_ms": TARGET_ADDED_P50_MS, "met": added <= TARGET_ADDED_P50_MS},
        machine=machine(),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per caller and round")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script works")
    parser.add_argument("--json", type=Path, default=None, help="where the results go")
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)  # the far side's own process
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    calls, rounds = (20, 2) if args.quick else (args.calls, args.rounds)
    d = measure(calls, rounds)
    table = Table(title=f"ctx.http overhead per call (sandbox isolation: {d['isolation']})")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "caller" else "right")
    for cells in rows(d):
        table.add_row(*cells)
    Console(width=160).print(table)
    verdict = "met" if d["target"]["met"] else "MISSED"
    print(f"stored ctx.http adds {d['added_p50_ms']:.3f} ms at p50 (target <= {TARGET_ADDED_P50_MS} ms): {verdict}")
    write_result(result_path("connections", args.json), d)


if __name__ == "__main__":
    main()
