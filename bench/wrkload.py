"""`wrk` (Debian's package, C with LuaJIT) as the load generator: pinned to one core, a Lua body script that
gives every request its own event_token, results as JSON from wrk's `done()` hook.

Used by `bench/intake.py --generator wrk`; the Python generator (bench/load.py) stays the fallback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.common import temp_dir

WRK = shutil.which("wrk") or "/usr/bin/wrk"
LONG = "=" * 7  # Lua long-string level: bodies are url-encoded and never contain "]=======]"


def available() -> bool:
    return Path(WRK).exists()


def split_body(body: bytes, token_key: bytes = b"event_token=") -> tuple[bytes, bytes]:
    """The body around the value of event_token: (everything up to and including `event_token=`, the rest)."""
    start = body.index(token_key) + len(token_key)
    end = body.find(b"&", start)
    return body[:start], (body[end:] if end >= 0 else b"")


def lua_script(head: bytes, tail: bytes, token_prefix: str) -> str:
    for part in (head, tail):
        if f"]{LONG}]".encode() in part:
            raise ValueError("the body cannot be quoted as a Lua long string")
    prefix = quote(token_prefix, safe="")
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local head = [{LONG}[{head.decode()}{prefix}]{LONG}]
local tail = [{LONG}[{tail.decode()}]{LONG}]
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, head .. n .. tail)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRKJSON {{"requests": %d, "duration_us": %d, "status_errors": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its live children (clock ticks)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def run_wrk(
    url: str,
    body: bytes,
    *,
    token_prefix: str,
    concurrency: int,
    duration: float,
    core: int,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """One wrk run (one thread, `concurrency` connections, pinned to `core`): acks/s, p50/p99, server CPU."""
    head, tail = split_body(body)
    script = temp_dir("b24r-wrk-") / "body.lua"
    script.write_text(lua_script(head, tail, token_prefix), encoding="utf-8")
    cmd = [
        "taskset",
        "-c",
        str(core),
        WRK,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    ticks = os.sysconf("SC_CLK_TCK")
    before = cpu_ticks(server_pid) if server_pid else 0
    done = subprocess.run(cmd, capture_output=True, check=False, timeout=duration + 60)
    after = cpu_ticks(server_pid) if server_pid else 0
    out = done.stdout.decode(errors="replace")
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {done.stderr.decode(errors='replace')[-2000:]}{out[-2000:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    errors = data["status_errors"] + data["connect"] + data["read"] + data["write"] + data["timeout"]
    ok = data["requests"] - errors
    seconds = data["duration_us"] / 1e6
    return {
        "n": data["requests"],
        "ok": ok,
        "errors": errors,
        "per_s": ok / seconds if seconds > 0 else 0.0,
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
        "wall_s": seconds,
        "cpu_ms_per_ack": ((after - before) / ticks * 1000 / ok) if server_pid and ok else None,
    }
