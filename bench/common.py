"""What every benchmark script shares: statistics, result files, the machine, servers in subprocesses."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `bench.*` and `tests.pgserver` import from the repository root
    sys.path.insert(0, str(ROOT))

from b24robots.testing import Portal, PortalSimulator, SimApp  # noqa: E402

RESULTS = ROOT / "bench" / "results"
_TEMP_DIRS: list[Path] = []
SECRET_KEY = "bench-secret-key"


def _remove_temp_dirs() -> None:
    for path in _TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def temp_dir(prefix: str) -> Path:
    """A scratch directory removed when the script exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if not _TEMP_DIRS:
        atexit.register(_remove_temp_dirs)
    _TEMP_DIRS.append(path)
    return path


# --- statistics ------------------------------------------------------------------------------------
def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no samples), as in bench/sandbox_overhead.py."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Count, p50, p99, mean and max in milliseconds of samples given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p99_ms": percentile(ms, 0.99),
        "mean_ms": sum(ms) / len(ms) if ms else 0.0,
        "max_ms": max(ms) if ms else 0.0,
    }


def ratio(ours: float, baseline: float) -> float | None:
    """ours / baseline, or None when the baseline is zero."""
    return ours / baseline if baseline else None


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


# --- results ---------------------------------------------------------------------------------------
def result_path(name: str, given: Path | None) -> Path:
    return given if given is not None else RESULTS / f"{name}.json"


def write_result(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def machine() -> dict[str, Any]:
    """nproc, RAM, CPU model, Python and OS of this machine (read from /proc)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(ram_kb / 1024 / 1024, 1),
        "cpu": cpu or platform.processor() or "unknown",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- processes -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory field of /proc/<pid>/status in KiB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Every descendant process of `pid` (from /proc/<pid>/task/*/children, recursively)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            direct = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in direct:
            out += [child, *children(child)]
    return out


def wait_http(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Poll `url` until it answers 200; RuntimeError (with the end of the process' log) otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"the server exited with {proc.returncode}: {err}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def spawn(cmd: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server; its output goes to `log` (a pipe nobody reads would block it once full)."""
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=dict(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; only this process (we started it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class OurServer:
    """`b24robots serve bench.robots:router` in a subprocess, configured for one simulated app."""

    def __init__(
        self,
        app: SimApp,
        *,
        database_url: str = "",
        data_dir: Path | None = None,
        workers: bool = True,
        port: int | None = None,
        oauth_url: str = "",
    ) -> None:
        self.app = app
        self.oauth_url = oauth_url  # the simulator's OAuth server: the only one that confirms installs
        self.port = port or free_port()
        self.data_dir = data_dir or temp_dir("b24r-bench-")
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'b24robots.db'}"
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT),
            "B24R_DATA_DIR": str(self.data_dir),
            "B24R_DATABASE_URL": self.database_url,
            "B24R_PUBLIC_URL": self.base_url,
            "B24R_CLIENT_ID": self.app.client_id,
            "B24R_CLIENT_SECRET": self.app.client_secret,
            "B24R_SECRET_KEY": SECRET_KEY,
            "B24R_ALLOW_HTTP_PORTALS": "true",
            "B24R_LOG_LEVEL": "WARNING",
        } | ({"B24R_OAUTH_SERVERS": self.oauth_url} if self.oauth_url else {})

    def cli(self, *args: str) -> str:
        """Run another `b24robots` command against the same settings; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "b24robots", *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"b24robots {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "b24robots", "serve", "bench.robots:router", "--port", str(self.port)]
        if not self.workers:
            cmd.append("--no-workers")
        self.log = self.data_dir / "server.log"
        self.proc = spawn(cmd, self.env(), self.log)
        # the sandbox's zygote starts with the server: on a shared, loaded machine that took 26 s
        wait_http(f"{self.base_url}/healthz", timeout=90.0, proc=self.proc, log=self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start the server first"
        return self.proc.pid


def register_served_app(sim: PortalSimulator, port: int, name: str = "b24robots bench") -> SimApp:
    """A simulated application whose install URL points at our server on `port` (it binds its events)."""
    return sim.register_app(name, install_url=f"http://127.0.0.1:{port}/b24/install")


async def wait_registered(sim: PortalSimulator, portal: Portal, codes: Sequence[str], timeout: float = 30.0) -> None:
    """Wait until the server's background sync registered every code on the portal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(codes) <= {r.code for r in portal.registrations.values()}:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"robots {list(codes)} were not registered on {portal.domain} within {timeout} s")


async def install(sim: PortalSimulator, app: SimApp, portal: Portal, codes: Sequence[str]) -> None:
    """Install `app` on `portal` (ONAPPINSTALL to the served app) and wait for its robots."""
    inst = await sim.install_app(app, portal)
    delivery = inst.deliveries[-1] if inst.deliveries else None
    if delivery is None or delivery.status_code != 200:
        detail = (delivery.error or delivery.response_text) if delivery else "no delivery"
        raise RuntimeError(f"the install event was refused: {detail}")
    await wait_registered(sim, portal, codes)


async def capture_bodies(
    sim: PortalSimulator, portal: Portal, code: str, count: int, properties: Mapping[str, Any]
) -> list[bytes]:
    """`count` robot-call bodies exactly as the simulator sends them (§2.2; fresh tokens, unique event_token).

    The simulator's delivery goes to a recording transport instead of the handler; its workflows stay
    waiting. The previous delivery client is closed first and again afterwards, so later deliveries
    use whatever `sim.handler_transport` is then (real HTTP when None).
    """
    bodies: list[bytes] = []

    def record(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200, json={"status": "captured"})

    previous = sim.handler_transport
    await sim.aclose()
    sim.handler_transport = httpx.MockTransport(record)
    try:
        for _ in range(count):
            await sim.start_robot(portal, code, properties=dict(properties))
    finally:
        await sim.aclose()
        sim.handler_transport = previous
    return bodies


def lift_bucket(sim: PortalSimulator, portal: Portal, rate: float = 100_000.0, burst: int = 1_000_000) -> None:
    """Take the portal's request-rate limit out of the way (when the limit is not what is measured)."""
    bucket = sim.portal(portal).bucket
    bucket.rate, bucket.burst, bucket.level = rate, burst, 0.0


class BaselineServer:
    """bench/baseline_app.py under uvicorn in a subprocess."""

    def __init__(self, rest_url: str, client_id: str) -> None:
        self.port = free_port()
        self.rest_url = rest_url
        self.client_id = client_id
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "baseline_app.py"),
            "--port",
            str(self.port),
            "--rest-url",
            self.rest_url,
            "--client-id",
            self.client_id,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = temp_dir("b24r-baseline-") / "server.log"
        self.proc = spawn(cmd, env, self.log)
        wait_http(f"{self.base_url}/healthz", proc=self.proc, log=self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def run_load(
    url: str, bodies: Sequence[bytes], *, concurrency: int, warmup: int = 0, clients: int = 1
) -> dict[str, Any]:
    """Post `bodies` to `url` from `clients` load-generator processes sharing `concurrency` connections.

    Returns the merged latencies (seconds), status counts, the measured requests per second and the
    wall time of the measured window.
    """
    clients = max(1, min(clients, concurrency))
    work = temp_dir("b24r-load-")
    start_at = time.time() + 0.35 + 0.15 * clients  # every generator imports first, then all begin together
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    for k in range(clients):
        mine = list(bodies[k::clients])
        share = concurrency // clients + (1 if k < concurrency % clients else 0)
        body_file, out = work / f"bodies{k}.txt", work / f"out{k}.json"
        body_file.write_bytes(b"\n".join(mine) + b"\n")
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            url,
            str(body_file),
            "--concurrency",
            str(share),
            "--warmup",
            str(warmup // clients),
            "--start-at",
            str(start_at),
            "--json",
            str(out),
        ]
        procs.append((subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE), out))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    answers: dict[str, int] = {}
    windows: list[list[float]] = []
    for proc, out in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"the load generator failed: {err.decode(errors='replace')[-2000:]}")
        data = json.loads(out.read_text(encoding="utf-8"))
        latencies += data["latencies"]
        for key, n in data["statuses"].items():
            statuses[key] = statuses.get(key, 0) + n
        for key, n in data["answers"].items():
            answers[key] = answers.get(key, 0) + n
        windows.append(data["window"])
    wall = max(w[1] for w in windows) - min(w[0] for w in windows)
    ok = statuses.get("200", 0)
    return {
        "latencies": latencies,
        "statuses": statuses,
        "answers": answers,
        "wall_s": wall,
        "per_s": ok / wall if wall > 0 else 0.0,
    }


async def register_robot(sim: PortalSimulator, app: SimApp, portal: Portal, handler_url: str) -> None:
    """Register `bench.echo` for `app` with `handler_url` (what the baseline app's installer would do)."""
    from bench.robots import MODULE_CODE, router

    module = router.get(MODULE_CODE)
    assert module is not None
    added = await sim.call("bizproc.robot.add", module.spec.to_registration(handler_url), app=app, portal=portal)
    if added.status_code != 200:
        raise RuntimeError(f"could not register the baseline robot: {added.text}")
