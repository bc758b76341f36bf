"""Where the intake's CPU goes: robot calls straight into the ASGI app, in this process, with a profile.

    python bench/intake_profile.py [--calls 5000] [--concurrency 16] [--profile] [--top 30] [--database-url URL]

The app is built as `b24robots serve` builds it (create_app, SQLite in a scratch directory or the given
database, no workers), the portal installed through the simulator; each call is the simulator's own body
for `bench.echo` with its own event_token, passed to the app as an ASGI `http` request (no client library
in between, so the process CPU is the app's: routing, the form codec, the intake, the group writer and its
commit, the response). `--concurrency` calls are in flight at once, so the group writer forms groups as
under load. Prints CPU ms per acknowledged call (process time / calls) and, with `--profile`, the
functions with the most own time and the time grouped by component.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from b24robots.inbound.formcodec import decode_form
from b24robots.portal.robot_call import Intake
from b24robots.store.group_commit import GroupWriter
from b24robots.testing.app_fixtures import RobotHarness
from bench.common import capture_bodies, temp_dir
from bench.robots import MODULE_CODE, PROPERTIES, router
from bench.wrkload import split_body

# substrings of a profiled function's file -> the component it belongs to (first match wins)
COMPONENTS = [
    ("b24robots/inbound/formcodec", "form codec"),
    ("b24robots/portal/auth", "auth + cache"),
    ("b24robots/store/installations", "auth + cache"),
    ("b24robots/store/installation_rows", "auth + cache"),
    ("b24robots/store/cache", "auth + cache"),
    ("b24robots/store/crypto", "auth + cache"),
    ("b24robots/robots/", "parameters, register"),
    ("b24robots/store/register", "parameters, register"),
    ("b24robots/portal/robot_call", "intake"),
    ("b24robots/jobs/", "intake"),
    ("b24robots/store/group_commit", "group writer"),
    ("b24robots/store/journal", "group writer"),
    ("b24robots/store/db", "group writer"),
    ("sqlalchemy", "SQLAlchemy"),
    ("sqlite3", "sqlite3 (driver, fsync)"),
    ("psycopg", "psycopg"),
    ("b24robots/web/metrics", "metrics"),
    ("prometheus_client", "metrics"),
    ("starlette", "Starlette / FastAPI"),
    ("fastapi", "Starlette / FastAPI"),
    ("pydantic", "Starlette / FastAPI"),
    ("anyio", "thread hand-off (anyio)"),
    ("concurrent/futures", "thread hand-off (anyio)"),
    ("threading", "thread hand-off (anyio)"),
    ("queue", "thread hand-off (anyio)"),
    ("asyncio", "event loop"),
    ("json", "JSON"),
]


def component(filename: str, func: str) -> str:
    for needle, name in COMPONENTS:
        if needle in filename:
            return name
    if filename == "~":  # a builtin
        if "sqlite3" in func:
            return "sqlite3 (driver, fsync)"
        if "lock" in func or "acquire" in func or "wait" in func:
            return "thread hand-off (anyio)"
        return "builtins"
    return "other"


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/b24/robot",
        "raw_path": b"/b24/robot",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/x-www-form-urlencoded")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def one_call(app: Any, body: bytes) -> tuple[int, bytes]:
    sent = False
    status = 0
    chunks: list[bytes] = []
    s = scope()
    s["headers"] = [*s["headers"], (b"content-length", str(len(body)).encode())]

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(s, receive, send)
    return status, b"".join(chunks)


class ThreadProfiles:
    """cProfile sees one thread; the intake runs in three: the event loop (this one), the thread pool
    (`Intake.accept`) and the group writer. Each gets its own profiler, timed by that thread's own CPU
    clock, switched on around the calls of the measured window only."""

    def __init__(self) -> None:
        self.active = False
        self.main = cProfile.Profile(time.thread_time)
        self._local = threading.local()
        self._all: list[cProfile.Profile] = [self.main]
        self._lock = threading.Lock()

    def _mine(self) -> cProfile.Profile:
        prof = getattr(self._local, "prof", None)
        if prof is None:
            prof = self._local.prof = cProfile.Profile(time.thread_time)
            with self._lock:
                self._all.append(prof)
        return prof

    def wrap(self, owner: Any, name: str) -> None:
        inner = getattr(owner, name)
        profiles = self

        def profiled(*a: Any, **kw: Any) -> Any:
            if not profiles.active:
                return inner(*a, **kw)
            prof = profiles._mine()
            prof.enable()
            try:
                return inner(*a, **kw)
            finally:
                prof.disable()

        setattr(owner, name, profiled)

    def patch(self) -> None:
        self.wrap(Intake, "accept")
        self.wrap(GroupWriter, "_commit")

    def start(self) -> None:
        self.active = True
        self.main.enable()

    def stop(self) -> None:
        self.main.disable()
        self.active = False

    def stats(self) -> pstats.Stats:
        stats = pstats.Stats(self._all[0])
        for prof in self._all[1:]:
            stats.add(prof)
        return stats


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = {"cache_seconds": 600.0}
    async with RobotHarness(
        router, data_dir=temp_dir("b24r-prof-"), database_url=args.database_url, sandbox=False, workers=False,
        settings=settings,
    ) as h:  # fmt: skip
        await h.install()
        body = (await capture_bodies(h.sim, h.portal, MODULE_CODE, 1, PROPERTIES))[0]
        assert decode_form(body)["code"] == MODULE_CODE
        head, tail = split_body(body)
        bodies = [head + f"prof.{i}".encode() + tail for i in range(args.calls + args.warmup)]
        app = h.asgi

        async def drive(items: list[bytes]) -> list[int]:
            statuses: list[int] = []
            it = iter(items)

            async def worker() -> None:
                for b in it:
                    status, _ = await one_call(app, b)
                    statuses.append(status)

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            return statuses

        profiles = ThreadProfiles() if args.profile else None
        if profiles:
            profiles.patch()
        await drive(bodies[: args.warmup])
        groups0, calls0 = h.svc.intake_writer.groups, h.svc.intake_writer.calls
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiles:
            profiles.start()
        statuses = await drive(bodies[args.warmup :])
        if profiles:
            profiles.stop()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        ok = statuses.count(200)
        groups = h.svc.intake_writer.groups - groups0
        calls = h.svc.intake_writer.calls - calls0
        stored = sum(n for _, _, n in h.svc.journal.counts())
        result = {
            "calls": args.calls,
            "ok": ok,
            "stored": stored,
            "cpu_ms_per_call": cpu * 1000 / max(ok, 1),
            "calls_per_s": ok / wall if wall else 0.0,
            "mean_group": calls / groups if groups else 0.0,
        }
        if profiles:
            result["profile"] = profiles
        if stored != args.calls + args.warmup or ok != args.calls:
            raise RuntimeError(f"{ok} of {args.calls} acknowledged, {stored} stored")
        return result


def report_profile(profiles: ThreadProfiles, calls: int, top: int) -> None:
    stats = profiles.stats()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    by_component: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in raw.items():
        name = component(filename, func)
        by_component[name] = by_component.get(name, 0.0) + tt
    print(
        f"\nown CPU time by component (the three threads, {total * 1000 / calls:.3f} ms per call with the"
        " profiler's own overhead)"
    )
    print(f"{'component':32} {'ms/call':>8} {'share':>6}")
    for name, tt in sorted(by_component.items(), key=lambda kv: -kv[1]):
        print(f"{name:32} {tt * 1000 / calls:8.3f} {tt / total:6.1%}")
    print(f"\ntop {top} functions by own time")
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url", default="", help="default: SQLite in a scratch directory")
    parser.add_argument("--profile", action="store_true", help="run under cProfile and print where the time goes")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(
        f"{result['ok']} calls acknowledged, {result['stored']} rows stored; "
        f"{result['calls_per_s']:.0f} calls/s, mean group {result['mean_group']:.1f}; "
        f"CPU {result['cpu_ms_per_call']:.3f} ms per acknowledged call"
        + (" (under the profiler)" if args.profile else "")
    )
    if args.profile:
        report_profile(result["profile"], result["ok"], args.top)


if __name__ == "__main__":
    main()
