"""`b24robots serve` and `b24robots worker` as real processes in tests: this checkout's code, started
until they say they are ready (never a fixed sleep), and stopped with SIGTERM, then a kill."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from b24robots.testing import PortalSimulator, SimulatorServer
from b24robots.testing.app_fixtures import PUBLIC_URL, RobotHarness

ROOT = Path(__file__).resolve().parent.parent
# processes started by tests import this checkout's b24robots (src) and the test robots (tests.*), not an
# installed copy that may be another version
CHECKOUT_PATH = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
ROBOTS = "tests.proc_robots:router"
START_SECONDS = 60.0
WORKER_RUNNING = "running; Ctrl+C stops it gracefully"  # what `b24robots worker` prints once it runs


@pytest.fixture
def served_sim() -> Iterator[PortalSimulator]:
    """The portal simulator on a local port, where other processes reach it."""
    sim = PortalSimulator()
    with SimulatorServer(sim):
        yield sim


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` and PATH, with this checkout first on the import path; output unbuffered, so that what a
    process prints arrives when it prints it."""
    return {"PATH": os.environ.get("PATH", ""), **env, "PYTHONPATH": CHECKOUT_PATH, "PYTHONUNBUFFERED": "1"}


def harness_env(h: RobotHarness, database_url: str, data_dir: Path, **env: str) -> dict[str, str]:
    """The settings of a process that serves the harness's application on `database_url` (8 workers
    unless `env` says otherwise)."""
    return {
        "B24R_DATABASE_URL": database_url,
        "B24R_DATA_DIR": str(data_dir),
        "B24R_SECRET_KEY": "test-secret-key",
        "B24R_ALLOW_HTTP_PORTALS": "true",
        "B24R_PUBLIC_URL": PUBLIC_URL,
        "B24R_CLIENT_ID": h.app.client_id,
        "B24R_CLIENT_SECRET": h.app.client_secret,
        "B24R_LOG_LEVEL": "WARNING",
        "B24R_WORKERS": "8",
        **env,
    }


def launch(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path = ROOT,
    stdout: int = subprocess.DEVNULL,
    stderr: int = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """`python -m b24robots ARGS` with `process_env(env)`; by default stderr is kept for the test to read."""
    return subprocess.Popen(
        [sys.executable, "-m", "b24robots", *args], env=process_env(env), cwd=cwd, stdout=stdout, stderr=stderr
    )


def stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM, and a kill when it is still running after `grace` seconds. Nothing when it has ended."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _fail(proc: subprocess.Popen[bytes], what: str) -> None:
    stop(proc, grace=5)
    output = proc.stderr or proc.stdout
    said = output.read().decode(errors="replace") if output is not None else ""
    pytest.fail(f"{what} (exit status {proc.returncode}); it said:\n{said[-4000:]}")


def wait_serving(proc: subprocess.Popen[bytes], port: int, timeout: float = START_SECONDS) -> None:
    """Until `serve` answers GET /healthz on `port`, with any status: it is up (whether it is healthy
    is for the test to ask). Fails, with what it said, when it ends or is not up in time."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    _fail(proc, f"serve did not answer on port {port}")


def wait_running(proc: subprocess.Popen[bytes], timeout: float = START_SECONDS) -> None:
    """Until `worker` prints that it runs (its heartbeat, workers and sender have started). Fails, with
    what it said, when it ends or does not run in time."""
    assert proc.stdout is not None, "a worker's readiness is read from its stdout: launch it with stdout=PIPE"
    said = b""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and (left := deadline - time.monotonic()) > 0:
        if select.select([proc.stdout], [], [], min(left, 0.5))[0]:
            said += os.read(proc.stdout.fileno(), 65536)
            if WORKER_RUNNING in " ".join(said.decode(errors="replace").split()):  # the console may wrap it
                return
    _fail(proc, "the worker did not start")


async def _ready(procs: list[subprocess.Popen[bytes]], wait: Callable[[subprocess.Popen[bytes]], None]) -> None:
    try:  # in threads: the test's event loop goes on serving what the processes call meanwhile
        await asyncio.gather(*(asyncio.to_thread(wait, p) for p in procs))
    except BaseException:
        for p in procs:
            stop(p, grace=5)
        raise


async def start_workers(
    h: RobotHarness, database_url: str, data_dir: Path, count: int, **env: str
) -> list[subprocess.Popen[bytes]]:
    """`count` processes of `b24robots worker tests.proc_robots:router`, started at once; back when every
    one of them runs."""
    environ = harness_env(h, database_url, data_dir, **env)
    procs = [launch(["worker", ROBOTS], environ, stdout=subprocess.PIPE) for _ in range(count)]
    await _ready(procs, wait_running)
    return procs


async def start_worker(h: RobotHarness, database_url: str, data_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    (proc,) = await start_workers(h, database_url, data_dir, 1, **env)
    return proc


async def start_serve(
    h: RobotHarness, database_url: str, data_dir: Path, *args: str, port: int | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """`b24robots serve ARGS --port PORT tests.proc_robots:router` (a free port unless given); back when it
    answers on its port."""
    port = port if port is not None else free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    environ = harness_env(h, database_url, data_dir, **env)
    proc = launch(["serve", *args, "--port", str(port), ROBOTS], environ)
    await _ready([proc], lambda p: wait_serving(p, port))
    return proc


async def wait_for(predicate: Callable[[], object], timeout: float) -> None:
    """Until `predicate()` is true; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError
