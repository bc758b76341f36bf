#!/usr/bin/env python3
"""Mutation testing with hand-written mutants: does the test suite notice a near miss?

Each mutant is a realistic mistake (an off-by-one, a dropped check, a lost case-fold) written as an
exact code snippet of one source file and its replacement (`scripts/mutants.py`). For each one this
script changes a private copy of the checkout, runs the tests that belong to the module
(`-x -q -p no:cacheprovider`, a per-mutant timeout) and records:

- killed: a test failed (or the run timed out: the mutant hangs);
- survived: every test passed, so no test tells the right code from the mutant;
- not applicable: the snippet is not in the file (or not exactly once). That is reported loudly and
  makes the exit status 2: the table must follow the code, a stale mutant is never counted.

The checkout itself is never written to: mutants are applied to a copy in a temporary directory (one
per job), which is restored and compared with the original after every mutant.

    .venv/bin/python scripts/mutation.py                      # every module, one job
    .venv/bin/python scripts/mutation.py --module rest/limiter.py --json out.json
    .venv/bin/python scripts/mutation.py --list               # the mutants, no test runs
    .venv/bin/python scripts/mutation.py --root /other/checkout  # this table against another checkout's tests

Exit status: 0 when every module is at or under --target survival, 1 when one is over, 2 when a
mutant was not applicable or a module's tests fail without any mutant.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from mutants import MODULES, MUTANTS, Mutant  # noqa: E402

IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.pyc", "*.db"
)
PYTEST_FLAGS = ["-x", "-q", "-p", "no:cacheprovider"]


@dataclass
class Outcome:
    module: str
    file: str
    line: int
    description: str
    status: str  # killed | survived | not applicable
    detail: str
    seconds: float


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locate(text: str, mutant: Mutant) -> tuple[int, str]:
    """(offset, "") where the snippet is, or (-1, why not)."""
    count = text.count(mutant.snippet)
    if count == 0:
        return -1, "snippet not found: the code changed; update scripts/mutants.py"
    if count > 1:
        return -1, f"snippet found {count} times: make it unique in scripts/mutants.py"
    return text.index(mutant.snippet), ""


@contextmanager
def mutated(copy: Path, mutant: Mutant) -> Iterator[tuple[int, str]]:
    """Apply `mutant` to the copy's file, yield (line, problem); always restore and check the file."""
    target = copy / "src" / "b24robots" / mutant.file
    original = target.read_bytes()
    text = original.decode()
    offset, problem = locate(text, mutant)
    if offset < 0:
        yield 0, problem
        return
    line = text.count("\n", 0, offset) + 1
    try:
        target.write_text(text[:offset] + mutant.replacement + text[offset + len(mutant.snippet) :])
        yield line, ""
    finally:
        target.write_bytes(original)
        if target.read_bytes() != original:
            raise SystemExit(f"could not restore {target}; stop")


def run_tests(copy: Path, tests: list[str], timeout: float, markers: str) -> tuple[str, str, float]:
    """Run `tests` in the copy; (status, detail, seconds). Status: passed, failed or timeout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), str(copy)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", *PYTEST_FLAGS, "-m", markers, *tests]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: servers and workers the tests started
        proc.communicate()
        return "timeout", f"no result within {timeout:.0f} s", time.monotonic() - started
    seconds = time.monotonic() - started
    if proc.returncode == 0:
        return "passed", "", seconds
    if proc.returncode == 5:
        return "failed", "pytest collected no tests (check the marker expression)", seconds
    failed = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return "failed", (failed[0] if failed else out.strip().splitlines()[-1] if out.strip() else ""), seconds


def make_copy(root: Path) -> Path:
    where = Path(tempfile.mkdtemp(prefix="b24r-mutation-"))
    copy = where / "checkout"
    shutil.copytree(root, copy, ignore=IGNORE, symlinks=True)
    return copy


def check_imports_copy(copy: Path) -> None:
    """The tests must import the mutated copy, not the checkout (an editable install could win)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(copy / "src"), str(copy)]))
    got = subprocess.run(
        [sys.executable, "-c", "import b24robots; print(b24robots.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not got.startswith(str(copy)):
        raise SystemExit(f"the copy imports b24robots from {got}, not from {copy}; stop")


def run_module(module: str, mutants: list[Mutant], args: argparse.Namespace) -> tuple[list[Outcome], str]:
    """Every mutant of one module in its own copy; returns the outcomes and a problem (baseline failure)."""
    copy = make_copy(args.root)
    wanted = args.tests or MODULES[module]
    tests = [t for t in wanted if (copy / t).exists()]
    for missing in sorted(set(wanted) - set(tests)):
        print(f"[{module}] note: {missing} is not in {args.root}; running without it", flush=True)
    try:
        check_imports_copy(copy)
        status, detail, base = run_tests(copy, tests, args.timeout or 1800, args.markers)
        print(f"[{module}] baseline: {status} in {base:.1f} s ({len(mutants)} mutants)", flush=True)
        if status != "passed":
            return [], f"the tests fail without any mutant: {detail}"
        timeout = args.timeout or max(60.0, base * 3 + 30)
        sources = {m.file: _digest(copy / "src" / "b24robots" / m.file) for m in mutants}
        outcomes: list[Outcome] = []
        for mutant in mutants:
            with mutated(copy, mutant) as (line, problem):
                if problem:
                    outcome = Outcome(module, mutant.file, 0, mutant.description, "not applicable", problem, 0.0)
                else:
                    status, detail, seconds = run_tests(copy, tests, timeout, args.markers)
                    verdict = "survived" if status == "passed" else "killed"
                    outcome = Outcome(module, mutant.file, line, mutant.description, verdict, detail, seconds)
            for name, digest in sources.items():
                if _digest(copy / "src" / "b24robots" / name) != digest:
                    raise SystemExit(f"{name} in the copy differs from the checkout after a mutant; stop")
            mark = {"killed": "killed  ", "survived": "SURVIVED", "not applicable": "N/A     "}[outcome.status]
            print(f"[{module}] {mark} {outcome.file}:{outcome.line} {outcome.description}", flush=True)
            if outcome.status == "not applicable":
                print(f"[{module}]          {outcome.detail}", flush=True)
            outcomes.append(outcome)
        return outcomes, ""
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def table(results: dict[str, list[Outcome]], problems: dict[str, str]) -> str:
    rows = [("module", "killed", "survived", "survival %", "n/a")]
    for module, outcomes in results.items():
        killed = sum(o.status == "killed" for o in outcomes)
        survived = sum(o.status == "survived" for o in outcomes)
        na = sum(o.status == "not applicable" for o in outcomes)
        counted = killed + survived
        pct = f"{100 * survived / counted:.0f}" if counted else "-"
        if module in problems:
            pct = "baseline fails"
        rows.append((module, str(killed), str(survived), pct, str(na)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="run only this module (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="modules run at once (default 1: the machine is shared)")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per mutant (default 3 x baseline + 30)")
    parser.add_argument(
        "--markers",
        default="not postgres and not browser",
        help="pytest -m expression (default: SQLite only, no browser)",
    )
    parser.add_argument("--target", type=float, default=15.0, help="highest acceptable survival %% (default 15)")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON to this file")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to mutate and test (default: this one)")
    parser.add_argument(
        "--tests",
        nargs="+",
        help="run these test files instead of the module's (fewer tests: the survival is an upper bound)",
    )
    parser.add_argument("--list", action="store_true", help="print the mutants and whether they apply; run nothing")
    args = parser.parse_args(argv)

    modules = args.module or list(MODULES)
    chosen = {m: [x for x in MUTANTS if x.module == m] for m in modules}
    if args.list:
        stale = 0
        for module, mutants in chosen.items():
            for m in mutants:
                text = (args.root / "src" / "b24robots" / m.file).read_text()
                offset, problem = locate(text, m)
                line = text.count("\n", 0, offset) + 1 if offset >= 0 else 0
                stale += bool(problem)
                flag = f" | NOT APPLICABLE: {problem}" if problem else ""
                print(f"{module} | {m.file}:{line} | {m.description}{flag}")
        return 2 if stale else 0

    results: dict[str, list[Outcome]] = {}
    problems: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {m: pool.submit(run_module, m, chosen[m], args) for m in modules}
        for module, future in futures.items():
            results[module], problem = future.result()
            if problem:
                problems[module] = problem

    print()
    print(table(results, problems))
    survivors = [o for out in results.values() for o in out if o.status == "survived"]
    stale = [o for out in results.values() for o in out if o.status == "not applicable"]
    if survivors:
        print("\nsurvivors (each is a missing test):")
        for o in survivors:
            print(f"- {o.file}:{o.line} - {o.description}")
    if stale:
        print("\nNOT APPLICABLE - these mutants no longer match the code; fix scripts/mutants.py:")
        for o in stale:
            print(f"- {o.module}: {o.description} ({o.detail})")
    for module, problem in problems.items():
        print(f"\n{module}: {problem}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "markers": args.markers,
                    "modules": {m: [asdict(o) for o in out] for m, out in results.items()},
                    "problems": problems,
                },
                indent=2,
            )
        )
    if stale or problems:
        return 2
    over = False
    for outcomes in results.values():
        counted = [o for o in outcomes if o.status != "not applicable"]
        if counted and 100 * sum(o.status == "survived" for o in counted) / len(counted) > args.target:
            over = True
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
