"""How long the sandbox zygote takes to make one worker: the fork request until the worker is ready.

    python bench/sandbox_fork.py [--forks N] [--no-bwrap] [--json PATH]

The pool does this ahead of demand (one refiller per slot), so it bounds how fast back-to-back runs
can use workers up, not what a single run waits for. Not root, where the kernel allows it, a worker
is forked twice (its own pid namespace, see docs/stored-code.md); as root it is forked once. Run it
as the user the server runs as (e.g. through `setpriv --reuid=65534 ...` for `nobody`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from b24robots.sandbox._spawn import Identities, Zygote
from b24robots.sandbox.limits import SandboxLimits

WARM_UP = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=300, help="workers to make (after 20 not counted)")
    parser.add_argument("--no-bwrap", action="store_true", help="start the zygote without bubblewrap")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    caps = SandboxLimits()
    identities = Identities(60000, 8)
    bwrap = None if args.no_bwrap else shutil.which("bwrap")
    if os.geteuid() == 0:
        identities.claim()  # as root each worker drops to a uid of this range
    zygote = Zygote(bwrap, caps, identities, seccomp=True)
    samples: list[float] = []
    isolation: dict[str, object] = {}
    try:
        for _ in range(WARM_UP + args.forks):
            start = time.perf_counter()
            child = zygote.fork(caps)
            samples.append((time.perf_counter() - start) * 1000)
            isolation = child.isolation
            child.sock.close()
            zygote.release(child.pid)
    finally:
        zygote.close()
        identities.release()
    ordered = sorted(samples[WARM_UP:])
    report = {
        "forks": len(ordered),
        "bwrap": bool(bwrap),
        "p50_ms": ordered[len(ordered) // 2],
        "p90_ms": ordered[int(len(ordered) * 0.9)],
        "mean_ms": statistics.fmean(ordered),
        "pid_per_worker": bool(isolation.get("pid_per_worker")),
        "uid_dropped": bool(isolation.get("uid_dropped")),
    }
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
