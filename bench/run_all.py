"""Run every benchmark and write the report (docs/benchmarks.md).

    python bench/run_all.py            # the full run (several minutes), writes docs/benchmarks.md
    python bench/run_all.py --quick    # a fast pass, writes bench/results/benchmarks-quick.md

Each script runs in its own process and writes its JSON into --results (default bench/results/);
this runner then renders one Markdown report with the machine, the commands, the date, every table
and whether each target was met.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import connections, e2e, intake, wrkload
from bench.common import RESULTS, ROOT, fmt_ratio, machine, ratio, verdict

SCRIPTS = ("intake", "intake_wrk", "delivery", "sandbox_overhead", "connections", "e2e", "memory")


def command(name: str, quick: bool, out: Path) -> list[str]:
    if name == "sandbox_overhead":
        sizes = ["--runs", "30", "--spaced-runs", "10", "--fresh-runs", "3"] if quick else ["--runs", "1000"]
        sizes += [] if quick else ["--spaced-runs", "200", "--fresh-runs", "50"]
        return [sys.executable, "bench/sandbox_overhead.py", *sizes, "--json", str(out)]
    if name == "intake_wrk":
        return [
            sys.executable,
            "bench/intake.py",
            "--generator",
            "wrk",
            *(["--quick"] if quick else []),
            "--json",
            str(out),
        ]
    return [sys.executable, f"bench/{name}.py", *(["--quick"] if quick else []), "--json", str(out)]


def shown(cmd: list[str]) -> str:
    return " ".join(["python", *cmd[1:-2]])


def run(names: tuple[str, ...], quick: bool, results: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        if name == "intake_wrk" and not wrkload.available():
            print("skipping intake_wrk: wrk is not installed (apt-get install wrk)", flush=True)
            continue
        path = results / f"{name}.json"
        cmd = command(name, quick, path)
        print(f"$ {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed with exit code {done.returncode}")
        out[name] = {
            "data": json.loads(path.read_text(encoding="utf-8")),
            "command": shown(cmd),
            "seconds": time.monotonic() - started,
        }
    return out


# --- Markdown ----------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def intake_section(d: dict[str, Any]) -> tuple[str, bool]:
    rows = intake.rows(d)
    headers = intake.HEADERS
    pg = d.get("postgres_settings") or {}
    notes = [
        f"{d['requests']} measured requests per level (ours), after {d['warmup']} unmeasured; closed loop "
        f"(each connection sends its next call when the previous answer arrived); {d['clients']} load process(es).",
        "An acknowledgement is HTTP 200 `queued`: the row is committed (SQLite WAL `synchronous=FULL`; "
        f"PostgreSQL {pg.get('server_version', '')} fsync={pg.get('fsync', '?')}, "
        f"synchronous_commit={pg.get('synchronous_commit', '?')}). After each run the journal row count "
        "is checked against the acknowledgements.",
        "Baseline: bench/baseline_app.py `/robot` - the same form parsed, validated with `app.info` on the "
        "simulator (real port), nothing stored. The load ceiling is the same generator against `/noop`.",
    ]
    if "postgres_skipped" in d:
        notes.append(f"PostgreSQL skipped: {d['postgres_skipped']}.")
    return table(headers, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes), bool(d["target"]["met"])


def intake_wrk_section(d: dict[str, Any]) -> tuple[str, bool]:
    pg = d.get("postgres_settings") or {}
    notes = [
        f"wrk (one thread, LuaJIT body script giving each request its own event_token) pinned to core "
        f"{intake.LOAD_CORE} with taskset, the server's threads pinned to core {intake.SERVER_CORE}; "
        f"{d['duration_s']:g} s per row after a 1 s warm-up; closed loop.",
        "Ceiling: the same wrk against bench/baseline_app.py `/noop` (uvicorn + FastAPI reading the body) on "
        "the same core, in the same run.",
        "An acknowledgement is HTTP 200: the row is committed (SQLite WAL `synchronous=FULL`; PostgreSQL "
        f"{pg.get('server_version', '')} fsync={pg.get('fsync', '?')}, "
        f"synchronous_commit={pg.get('synchronous_commit', '?')}, not pinned). "
        "rows = journal rows with that run's tokens / calls acknowledged (calls still in flight when wrk "
        "stops may be stored unacknowledged).",
        "CPU ms/ack: the server process's user + system CPU during the run divided by the acknowledged calls.",
    ]
    if "postgres_skipped" in d:
        notes.append(f"PostgreSQL skipped: {d['postgres_skipped']}.")
    verdicts = intake.wrk_verdicts(d)
    notes += [f"target {text}: {verdict(ok)}" for text, ok in verdicts]
    met = bool(verdicts) and all(ok for _, ok in verdicts)
    return table(intake.WRK_HEADERS, intake.wrk_rows(d)) + "\n\n" + "\n".join(f"- {n}" for n in notes), met


def delivery_section(d: dict[str, Any]) -> tuple[str, bool]:
    base = d["baseline_sustained"]
    rows = []
    for name, key in (
        ("ours: batched Sender, bucket unused at start", "ours_cold"),
        ("ours: batched Sender, bucket full at start", "ours_sustained"),
        ("baseline: one bizproc.event.send per answer, bucket full", "baseline_sustained"),
    ):
        r = d[key]
        rows.append(
            [
                name,
                str(r["answers"]),
                f"{r['seconds']:.2f}",
                f"{r['per_s']:.1f}",
                str(r["requests"]),
                str(r["http_503"]),
                fmt_ratio(ratio(r["per_s"], base["per_s"])),
            ]
        )
    main = table(["sender", "answers", "seconds", "answers/s", "HTTP requests", "503s", "vs baseline"], rows)
    f = d["fairness"]
    fair = table(
        [
            "portals x answers",
            "answers/s",
            "total s",
            "drain min s",
            "drain p50 s",
            "drain max s",
            "max/min",
            "slowest first answer s",
            "503s",
        ],
        [
            [
                f"{f['portals']} x {f['per_portal']}",
                f"{f['per_s']:.0f}",
                f"{f['seconds']:.2f}",
                f"{f['drain_min_s']:.2f}",
                f"{f['drain_p50_s']:.2f}",
                f"{f['drain_max_s']:.2f}",
                fmt_ratio(f["drain_max_min_ratio"]),
                f"{f['first_answer_max_s']:.2f}",
                str(f["http_503"]),
            ]
        ],
    )
    notes = [
        f"One simulated portal at {d['rate']:g} requests/s, burst {d['burst']}; real time; our server and the "
        "simulator in one process (RobotHarness, SQLite). The backlog is built through the intake and a worker "
        "before the clock starts; the time is until the portal closed the last workflow.",
        '"Bucket full at start": the portal\'s burst was first used up by `app.info` calls through the same '
        "client, so the rate shown is the sustained one (the cold row mostly measures the burst).",
        "The baseline drains a shorter backlog (at 2 requests/s a long one takes minutes); rates are compared.",
        "Fairness: the backlog was created round-robin across portals, each portal with its own 2/s bucket; "
        "drain time = until a portal's last answer arrived; max/min near 1-2 means no portal waited for "
        "the others to finish.",
    ]
    return main + "\n\n" + fair + "\n\n" + "\n".join(f"- {n}" for n in notes), bool(d["target"]["met"])


def sandbox_section(d: dict[str, Any]) -> tuple[str, bool]:
    pool, fresh, r = d["warm_pool"], d["fresh_interpreter"], d["ratio"]

    def row(label: str, m: dict[str, Any]) -> list[str]:
        return [label, str(m["runs"]), f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.3f}", f"{m['mean_ms']:.3f}"]

    rows = [row("pool, back-to-back runs (ours)", pool)]
    if "spaced_runs" in d:
        rows.append(row("pool, runs 30 ms apart (ours)", d["spaced_runs"]))
    rows.append(row("baseline: `python -I -c` per run", fresh))
    rows.append(["baseline / ours", "", f"{r['p50_ms']:.1f}x", f"{r['p99_ms']:.1f}x", f"{r['mean_ms']:.1f}x"])
    text = table(["", "runs", "p50 ms", "p99 ms", "mean ms"], rows)
    text += f"\n\n- Isolation in use: {d['isolation']}. Script: bench/sandbox_overhead.py (run as is)."
    return text, pool["p50_ms"] <= 5.0 and pool["p99_ms"] <= 20.0


def connections_section(d: dict[str, Any]) -> tuple[str, bool]:
    notes = [
        f"{d['rounds']} interleaved rounds of {d['calls_per_round']} calls per caller, after a warm-up; "
        "`GET /api/item` with a bearer token to one uvicorn app in a process of its own, kept-alive connections.",
        "Each call is timed where the caller sees it (inside the sandbox for stored code). The stored robot's "
        "call is a frame to the parent, which makes it through the same connection hub as a module robot's "
        f"and sends the answer back; isolation in use: {d['isolation']}, pool size 2.",
        "The connection's rate limit (default 10 calls/s) is raised out of the way. The calls' journal rows are "
        "written once per run, after it, and are not in these times. Script: bench/connections.py.",
    ]
    text = table(connections.HEADERS, connections.rows(d)) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text, bool(d["target"]["met"])


def e2e_section(d: dict[str, Any]) -> tuple[str, bool]:
    rows = e2e.rows(d)
    notes = [
        "Time from `start_robot` (the simulator builds and POSTs the call) until the simulator has applied "
        "our `bizproc.event.send`; one run at a time, the server idle in between.",
        "Baseline: bench/baseline_app.py `/direct` validates with app.info and calls bizproc.event.send before "
        "replying - no journal, no queue, no retry: the protocol's floor, not a design to copy.",
        "The portal's limit was raised to 1000 requests/s for this run (simulator and our stored limit) so "
        "back-to-back runs measure latency, not the 2/s limit.",
    ]
    worst = max(d[p][r]["p50_ms"] for p in ("in_process", "real_ports") for r in ("module", "stored"))
    return table(e2e.HEADERS, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes), worst <= 100.0


def memory_section(d: dict[str, Any]) -> str:
    ours, base = d["ours"], d["baseline"]

    def mib(kib: int) -> str:
        return f"{kib / 1024:.1f}"

    rows = [
        [
            "`b24robots serve` (SQLite, workers, sender)",
            mib(ours["idle"]["rss_kib"]),
            mib(ours["after_load"]["rss_kib"]),
            mib(ours["after_load"]["hwm_kib"]),
            f"{ours['after_load']['children']} processes, {mib(ours['after_load']['children_rss_kib'])} MiB",
            fmt_ratio(ratio(ours["after_load"]["rss_kib"], base["after_load"]["rss_kib"])),
        ],
        [
            "baseline: FastAPI + uvicorn handler",
            mib(base["idle"]["rss_kib"]),
            mib(base["after_load"]["rss_kib"]),
            mib(base["after_load"]["hwm_kib"]),
            "-",
            "1.00x",
        ],
    ]
    n = d["requests"]
    text = table(
        [
            "process",
            "idle MiB",
            f"after {n} calls MiB",
            "peak MiB",
            "descendants (sandbox pool)",
            "after load vs baseline",
        ],
        rows,
    )
    text += (
        f"\n\n- VmRSS/VmHWM from /proc/<pid>/status. Ours: {n} robot calls over real HTTP (16 at a time), each run "
        f"and answered, in {ours['load_seconds']:.1f} s; the baseline got the same number of calls."
    )
    return text


def render(results: dict[str, Any], quick: bool) -> str:
    m = machine()
    first = next(iter(results.values()), None)
    if first is not None and isinstance(first["data"].get("machine"), dict):
        m = {**m, "date": first["data"]["machine"].get("date", m["date"])}  # when the measuring began
    parts = [
        "# Benchmarks",
        "",
        f"Measured {m['date']}{' (quick pass: tiny sizes, numbers not meaningful)' if quick else ''}. "
        "Every script compares with a baseline measured in the same run. Regenerate with "
        f"`python bench/run_all.py{' --quick' if quick else ''}`; the JSON of each script is in bench/results/.",
        "",
        "## Machine",
        "",
        table(
            ["nproc", "RAM", "CPU", "Python", "OS"],
            [[str(m["nproc"]), f"{m['ram_gib']} GiB", m["cpu"], m["python"], m["os"]]],
        ),
        "",
        "Server, simulator and load generator share these cores.",
        "",
        "## Commands",
        "",
        "```",
        *[r["command"] + (f"    # {r['seconds']:.0f} s" if r["seconds"] else "") for r in results.values()],
        "```",
        "",
    ]
    verdicts: list[tuple[str, str, bool]] = []
    sections = {
        "intake": ("Intake", intake_section),
        "intake_wrk": ("Intake under wrk", intake_wrk_section),
        "delivery": ("Delivery", delivery_section),
        "sandbox_overhead": ("Stored-code overhead", sandbox_section),
        "connections": ("Connection calls from stored code", connections_section),
        "e2e": ("End to end", e2e_section),
    }
    for key, (title, fn) in sections.items():
        if key in results:
            text, met = fn(results[key]["data"])
            parts += [f"## {title}", "", text, ""]
            verdicts.append((key, title, met))
    if "memory" in results:
        parts += ["## Memory", "", memory_section(results["memory"]["data"]), ""]
    parts += ["## Targets", "", targets(results, verdicts), ""]
    return "\n".join(parts)


TARGETS = {
    "intake": "intake p99 <= 10 ms at concurrency 16 on SQLite",
    "intake_wrk": "wrk, c16: SQLite >= 0.5x /noop acks/s and p99 <= 3x; PostgreSQL >= 0.4x; CPU <= 1 ms per ack",
    "delivery": ">= 90 answers/s per portal at 2/s burst 50, zero 503s",
    "sandbox_overhead": "stored-code overhead p50 <= 5 ms",
    "connections": "stored ctx.http adds <= 2 ms at p50 over a direct httpx call",
    "e2e": "end-to-end p50 <= 100 ms, idle",
}


def measured(key: str, d: dict[str, Any]) -> str:
    if key == "intake":
        r = d["ours"]["sqlite"]["levels"].get("16")
        return f"p99 {r['p99_ms']:.1f} ms (p50 {r['p50_ms']:.1f} ms)" if r else "concurrency 16 not run"
    if key == "intake_wrk":
        return "; ".join(text for text, _ in intake.wrk_verdicts(d)) or "concurrency 16 not run"
    if key == "delivery":
        s, c = d["ours_sustained"], d["ours_cold"]
        return f"sustained {s['per_s']:.1f}/s, {s['http_503']} x 503; burst {c['per_s']:.0f}/s, {c['http_503']} x 503"
    if key == "sandbox_overhead":
        return f"p50 {d['warm_pool']['p50_ms']:.2f} ms"
    if key == "connections":
        return f"+{d['added_p50_ms']:.2f} ms at p50 (+{d['added_p99_ms']:.2f} ms at p99)"
    worst = max(d[p][r]["p50_ms"] for p in ("in_process", "real_ports") for r in ("module", "stored"))
    return f"worst p50 {worst:.1f} ms"


def targets(results: dict[str, Any], verdicts: list[tuple[str, str, bool]]) -> str:
    rows = [[TARGETS[key], measured(key, results[key]["data"]), verdict(met)] for key, _, met in verdicts]
    return table(["target", "measured", "verdict"], rows) + "\n\n" + ANALYSIS_PLACEHOLDER


ANALYSIS_PLACEHOLDER = "<!-- analysis -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every script still works")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON files go")
    parser.add_argument("--out", type=Path, default=None, help="the Markdown report")
    parser.add_argument("--only", default=",".join(SCRIPTS), help=f"comma list of: {', '.join(SCRIPTS)}")
    parser.add_argument("--render-only", action="store_true", help="rebuild the report from the JSON files")
    parser.add_argument("--analysis", type=Path, default=ROOT / "bench" / "analysis.md", help="text for the misses")
    args = parser.parse_args()
    out = args.out or (RESULTS / "benchmarks-quick.md" if args.quick else ROOT / "docs" / "benchmarks.md")
    names = tuple(n for n in args.only.split(",") if n)
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(SCRIPTS)}")
    args.results.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        results = {
            n: {
                "data": json.loads((args.results / f"{n}.json").read_text(encoding="utf-8")),
                "command": shown(command(n, args.quick, args.results / f"{n}.json")),
                "seconds": 0.0,
            }
            for n in names
        }
        previous = out.read_text(encoding="utf-8") if out.exists() else ""
        for n in names:  # keep the durations measured by the real run
            for line in previous.splitlines():
                if line.startswith(results[n]["command"] + "    # "):
                    results[n]["seconds"] = float(line.rsplit("# ", 1)[1].split()[0])
    else:
        results = run(names, args.quick, args.results)
    text = render(results, args.quick)
    analysis = args.analysis.read_text(encoding="utf-8").strip() if args.analysis.exists() and not args.quick else ""
    text = text.replace(ANALYSIS_PLACEHOLDER, analysis)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.rstrip() + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
