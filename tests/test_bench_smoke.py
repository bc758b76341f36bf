"""The benchmark scripts still run: every one of them in its quick mode, through bench/run_all.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench.run_all import TARGETS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_every_benchmark_runs_in_quick_mode_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "bench/run_all.py", "--quick", "--results", str(tmp_path), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    intake = json.loads((tmp_path / "intake.json").read_text())
    sqlite = intake["ours"]["sqlite"]
    assert sqlite["journal_rows"] > 0  # every acknowledged call was found in the journal (checked by the script)
    for level in ("1", "16", "64"):
        assert sqlite["levels"][level]["answers"] == {"queued": sqlite["levels"][level]["n"]}
        assert intake["baseline"][level]["statuses"] == {"200": intake["baseline"][level]["n"]}
        assert intake["ours"]["sqlite"]["levels"][level]["per_s"] > 0

    delivery = json.loads((tmp_path / "delivery.json").read_text())
    assert delivery["ours_cold"]["http_503"] == 0
    # a batch carries up to 50 answers; the baseline needs one request per answer
    assert delivery["ours_sustained"]["requests"] * 50 >= delivery["ours_sustained"]["answers"]
    assert delivery["baseline_sustained"]["requests"] == delivery["baseline_sustained"]["answers"]
    assert delivery["ours_sustained"]["per_s"] > 10 * delivery["baseline_sustained"]["per_s"]
    fair = delivery["fairness"]
    assert fair["answers"] == fair["portals"] * fair["per_portal"]

    e2e = json.loads((tmp_path / "e2e.json").read_text())
    for path in ("in_process", "real_ports"):
        for robot in ("module", "stored"):
            assert e2e[path][robot]["n"] == e2e["runs"] and e2e[path][robot]["p50_ms"] > 0
    assert e2e["real_ports"]["baseline"]["n"] == e2e["runs"]

    memory = json.loads((tmp_path / "memory.json").read_text())
    assert memory["ours"]["idle"]["rss_kib"] > 10_000  # a live Python server, read from /proc
    assert memory["ours"]["after_load"]["rss_kib"] > 0 and memory["baseline"]["idle"]["rss_kib"] > 0

    sandbox = json.loads((tmp_path / "sandbox_overhead.json").read_text())
    assert sandbox["warm_pool"]["runs"] == 30

    conn = json.loads((tmp_path / "connections.json").read_text())
    for caller in ("direct", "module", "stored"):
        assert conn[caller]["n"] == conn["rounds"] * conn["calls_per_round"] and conn[caller]["p50_ms"] > 0
    assert conn["added_p50_ms"] == conn["stored"]["p50_ms"] - conn["direct"]["p50_ms"]

    report = out.read_text()
    titles = (
        "## Machine",
        "## Intake",
        "## Delivery",
        "## Stored-code overhead",
        "## Connection calls from stored code",
    )
    for title in (*titles, "## End to end", "## Memory"):
        assert title in report
    # one verdict row per target; the wrk row only where wrk is installed (CI installs it)
    expected = [text for key, text in TARGETS.items() if key != "intake_wrk" or shutil.which("wrk")]
    for text in expected:
        assert f"| {text} |" in report
    assert report.count("| met |") + report.count("| MISSED |") == len(expected)


def test_the_intake_profile_runs_and_says_where_the_cpu_goes() -> None:
    done = subprocess.run(
        [sys.executable, "bench/intake_profile.py", "--calls", "60", "--warmup", "10", "--profile", "--top", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "60 calls acknowledged, 70 rows stored" in done.stdout
    assert "CPU" in done.stdout and "ms per acknowledged call" in done.stdout
    for component in ("form codec", "group writer", "auth + cache"):
        assert component in done.stdout  # the profile covers the event loop and the writer thread
