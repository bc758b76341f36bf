"""Shared fixtures and checks for the sandbox tests (imported by the test modules)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

from b24robots.sandbox import SandboxLimits, SandboxPool

CAPS = SandboxLimits(
    cpu_seconds=2.0, wall_seconds=3.0, memory_mb=160, output_bytes=100_000, file_size_mb=2, open_files=32
)
#: Tight per-call limits for snippets that are meant to hit one.
TIGHT = SandboxLimits(cpu_seconds=0.5, wall_seconds=1.0, memory_mb=128, output_bytes=50_000, file_size_mb=1)
CONTEXT = {
    "document_id": ["crm", "CCrmDocumentDeal", "DEAL_7"],
    "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
    "portal": "example.bitrix24.com",
    "workflow_id": "wf-1",
    "robot": "sum",
}
NORMAL = """\
import datetime
import math

def run(inputs, ctx):
    ctx.log("adding")
    return {"sum": math.fsum(inputs["values"]), "next": inputs["day"] + datetime.timedelta(days=1)}
"""
IS_ROOT = os.geteuid() == 0


def assert_serves_normally(pool: SandboxPool) -> None:
    """The pool is healthy and answers an ordinary robot correctly."""
    result = pool.run(NORMAL, {"values": [1.5, 2.5], "day": dt.date(2024, 2, 28)}, context=CONTEXT)
    assert result.outputs == {"sum": 4.0, "next": dt.date(2024, 2, 29)}
    assert result.log == ["adding"]
    health = pool.health()
    assert health["started"] and health["zygote_alive"]
    assert health["isolation"] in {"chroot+seccomp", "bwrap+chroot+seccomp", "bwrap+seccomp", "seccomp"}


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) for every process we can see."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def zygote_children(pool: SandboxPool) -> set[int]:
    """Host pids of the workers the pool's zygote has forked (found in /proc, through bubblewrap too)."""
    zygote = pool._zygote
    assert zygote is not None
    table = _processes()
    below = {zygote.process.pid}
    changed = True
    while changed:
        grown = below | {pid for pid, (ppid, _) in table.items() if ppid in below}
        changed, below = grown != below, grown
    ours = {
        pid for pid in below if "zygote_main" in table[pid][1] and not table[pid][1].split("\0")[0].endswith("bwrap")
    }
    return {pid for pid in ours if table[pid][0] in ours}


def hardened_pool() -> Iterator[SandboxPool]:
    """Body of the `pool` fixture each test module declares."""
    with SandboxPool(2, caps=CAPS) as p:
        yield p


def os_layer_pool() -> Iterator[SandboxPool]:
    """A pool with the in-language layer off: only the OS layer stands."""
    with SandboxPool(2, caps=CAPS, language_hardening=False) as p:
        yield p
