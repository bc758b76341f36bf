"""Per-run overhead of the sandbox pool (a fresh pre-forked process per run) versus `python -I` per run.

    python bench/sandbox_overhead.py [--runs N] [--spaced-runs N] [--fresh-runs N] [--json PATH]

Both sides run the same trivial robot; the pool also isolates it (rlimits, chroot, seccomp) and
runs each call in a process of its own, forked from the warm zygote ahead of demand. Pool size 2.
Back-to-back runs use workers up as fast as the pool can make them (the target's row); runs
30 ms apart find a spare ready, so they show what one run costs when demand is below that rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from b24robots.sandbox import SandboxPool

ROBOT = "def run(inputs, ctx):\n    return {'x': inputs['a'] + 1}\n"
FRESH = ROBOT + "import json, sys\nprint(json.dumps(run({'a': 1}, None)))\n"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "runs": len(samples),
        "p50_ms": percentile(samples, 0.50),
        "p99_ms": percentile(samples, 0.99),
        "mean_ms": statistics.fmean(samples),
    }


def bench_pool(
    runs: int, spaced_runs: int, bwrap: bool | None = None
) -> tuple[dict[str, float], dict[str, float], dict[str, object]]:
    with SandboxPool(2, bwrap=bwrap) as pool:
        for _ in range(20):  # warm-up
            pool.run(ROBOT, {"a": 1}, context={"portal": "bench.example"})

        def timed(count: int, gap: float) -> dict[str, float]:
            samples = []
            for _ in range(count):
                if gap:
                    time.sleep(gap)
                start = time.perf_counter()
                result = pool.run(ROBOT, {"a": 1}, context={"portal": "bench.example"})
                samples.append((time.perf_counter() - start) * 1000)
                assert result.outputs == {"x": 2}
            return summary(samples)

        return timed(runs, 0.0), timed(spaced_runs, 0.03), pool.health()


def bench_fresh(runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-I", "-c", FRESH], capture_output=True, check=True, env={})
        samples.append((time.perf_counter() - start) * 1000)
        assert json.loads(out.stdout) == {"x": 2}
    return summary(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs through the warm pool")
    parser.add_argument("--spaced-runs", type=int, default=200, help="runs through the pool 30 ms apart")
    parser.add_argument("--fresh-runs", type=int, default=50, help="fresh interpreters to start")
    parser.add_argument("--json", type=Path, default=Path("sandbox_overhead.json"), help="where to write results")
    parser.add_argument("--no-bwrap", action="store_true", help="start the zygote without bubblewrap")
    args = parser.parse_args()

    pool, spaced, health = bench_pool(args.runs, args.spaced_runs, False if args.no_bwrap else None)
    fresh = bench_fresh(args.fresh_runs)
    ratio = {key: fresh[key] / pool[key] for key in ("p50_ms", "p99_ms", "mean_ms")}

    table = Table(title=f"Sandbox overhead per run (isolation: {health['isolation']})")
    table.add_column("")
    for key in ("runs", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(key, justify="right")
    cells = (f"{pool[k]:.3f}" for k in ("p50_ms", "p99_ms", "mean_ms"))
    table.add_row("pool: fresh process per run", str(pool["runs"]), *cells)
    table.add_row(
        "pool: runs 30 ms apart", str(spaced["runs"]), *(f"{spaced[k]:.3f}" for k in ("p50_ms", "p99_ms", "mean_ms"))
    )
    table.add_row("python -I -c", str(fresh["runs"]), *(f"{fresh[k]:.3f}" for k in ("p50_ms", "p99_ms", "mean_ms")))
    table.add_row("ratio", "", *(f"{ratio[k]:.1f}x" for k in ("p50_ms", "p99_ms", "mean_ms")))
    Console().print(table)
    target = "met" if pool["p50_ms"] <= 5.0 and pool["p99_ms"] <= 20.0 else "MISSED"
    print(f"target pool p50 <= 5 ms and p99 <= 20 ms: {target}")

    report = {
        "warm_pool": pool,
        "spaced_runs": spaced,
        "fresh_interpreter": fresh,
        "ratio": ratio,
        "isolation": health["isolation"],
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
