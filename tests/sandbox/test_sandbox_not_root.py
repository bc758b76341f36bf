"""The levels reached without root: the pool run as `nobody` through `setpriv`, at both levels
(bubblewrap and plain), with the language layer off and, for what the namespaces hold alone,
seccomp off too. Each script drives real pools and prints one JSON report the test checks."""

from __future__ import annotations

import errno
import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import IS_ROOT

import b24robots.sandbox as sandbox_pkg

UNPRIVILEGED = """
import json, logging, sys
sys.path[:0] = %(paths)r
from b24robots.sandbox import SandboxLimits, SandboxPool
from b24robots.errors import SandboxError

warnings = []
class Keep(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
logging.getLogger("b24robots.sandbox").addHandler(Keep())

HOSTILE = {
    "fork": "import os\\nos.fork()",
    "socket": "import socket\\nsocket.socket()",
    # the zygote: not the worker's parent where it has a pid namespace of its own (getppid() is 0
    # there and pid 1 is the worker itself), so it is named by the pid this script sees
    "kill-zygote": "import os\\nos.kill(ZYGOTE, 9)",
    "prlimit-zygote": "import resource\\nresource.prlimit(ZYGOTE, resource.RLIMIT_AS, (1 << 20, 1 << 20))",
    "read-source": "open(%(source)r).read()",
    "write-big": "f = open('big', 'wb')\\nfor _ in range(50):\\n    f.write(b'x' * 1_000_000)\\n    f.flush()",
    "many-files": "for i in range(20):\\n    with open('f' + str(i), 'wb') as f:\\n        f.write(b'x' * 900_000)",
}
report = {}
for name, bwrap in (("bwrap", None), ("plain", False)):
    warnings.clear()
    caps = SandboxLimits(cpu_seconds=2, wall_seconds=3, memory_mb=160, file_size_mb=1)
    with SandboxPool(1, caps=caps, language_hardening=False, bwrap=bwrap) as pool:
        outcomes = {}
        for attack, body in HOSTILE.items():
            body = body.replace("ZYGOTE", str(pool._zygote.process.pid))
            source = "def run(inputs, ctx):\\n" + "".join("    " + line + "\\n" for line in body.split("\\n"))
            try:
                pool.run(source + "    return {}", {}, context={})
                outcomes[attack] = "succeeded"
            except SandboxError as exc:
                outcomes[attack] = type(exc).__name__ + ": " + str(exc)[:200]
        report[name] = {
            "level": pool.isolation_level,
            "warning": pool.isolation_warning,
            "health": pool.health()["isolation_warning"],
            "logged": list(warnings),
            "outcomes": outcomes,
        }
print(json.dumps(report))
"""


def _nobody(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **(env or {})},
    )


def _interpreter_for_nobody() -> str | None:
    """This Python, or the system's of the same version, if `nobody` can start it twice over
    (the pool execs its own interpreter for the zygote)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", shutil.which(version) or ""):
        if candidate and os.path.exists(candidate):
            probe = "import subprocess, sys; subprocess.run([sys.executable, '-I', '-c', ''], check=True)"
            if _nobody(candidate, "-c", probe).returncode == 0:
                return candidate
    return None


def _report_as_nobody(script: str) -> dict[str, Any]:
    """Run `script` (a pool driver printing one JSON line) as `nobody`; skip where that cannot be."""
    interpreter = _interpreter_for_nobody()
    if interpreter is None:
        pytest.skip("no Python interpreter here can be started by nobody")
    paths = [str(Path(sandbox_pkg.__file__).resolve().parents[2]), *site.getsitepackages()]
    probe = f"import sys; sys.path[:0] = {paths!r}; import b24robots.sandbox"
    if _nobody(interpreter, "-c", probe).returncode != 0:
        # e.g. a checkout or virtualenv under a 0700 directory (mktemp -d): nobody cannot import the pool
        pytest.skip("nobody cannot read this checkout or its virtualenv; clone it where others can read it")
    done = _nobody(interpreter, "-c", script.replace("%(paths)r", repr(paths)))
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.skipif(not IS_ROOT, reason="the suite is not root: every sandbox test here already runs unprivileged")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed to drop to nobody")
def test_not_root_reports_its_level_and_still_contains_the_basics() -> None:
    """The pool run as `nobody`: the level it reaches, the loud warning, and hostile basics failing."""
    source = str(Path(__file__).resolve())  # readable by nobody, outside bubblewrap's view
    report = _report_as_nobody(UNPRIVILEGED.replace("%(source)r", repr(source)))
    plain = report["plain"]
    assert plain["level"] == "seccomp"
    assert "not running as root" in plain["warning"] and plain["health"] == plain["warning"]
    assert any("SANDBOX ISOLATION DEGRADED (seccomp)" in line for line in plain["logged"])
    bwrap = report["bwrap"]
    if shutil.which("bwrap"):
        assert bwrap["level"] == "bwrap+seccomp"
        assert "user namespace" in bwrap["warning"]
        assert any("SANDBOX ISOLATION DEGRADED (bwrap+seccomp)" in line for line in bwrap["logged"])
        assert "FileNotFoundError" in bwrap["outcomes"]["read-source"]  # the host is out of view
        assert "No space left" in bwrap["outcomes"]["many-files"]  # the size-limited /tmp bounds the total
    if int(Path("/proc/sys/user/max_user_namespaces").read_text()) > 0:
        # each worker's root is its own, made of the interpreter's paths: this test file is not there
        assert "FileNotFoundError" in plain["outcomes"]["read-source"], plain["outcomes"]
        assert "only the interpreter's files" in plain["warning"], plain["warning"]
    else:
        assert plain["outcomes"]["read-source"] == "succeeded"  # the degradation the warning states
    for level in (plain, bwrap):
        outcomes = level["outcomes"]
        for attack in ("fork", "socket", "kill-zygote", "prlimit-zygote"):
            assert "PermissionError" in outcomes[attack], (attack, outcomes[attack])
        assert "file_size" in outcomes["write-big"] or "No space left" in outcomes["write-big"], outcomes


PAIR = """
import json, sys, threading, time
sys.path[:0] = %(paths)r
from b24robots.sandbox import SandboxLimits, SandboxPool

HOLD = "def run(inputs, ctx):\\n    import os, time\\n    time.sleep(1.5)\\n    return {'pid': os.getpid()}\\n"
ATTACK = '''def run(inputs, ctx):
    import ctypes, os, signal
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    key = 0x62323472  # the key a second worker would use to meet the first
    for name, call in (
        ("msgget", lambda: libc.msgget(key, 0o1666)),
        ("shmget", lambda: libc.shmget(key, 4096, 0o1666)),
        ("semget", lambda: libc.semget(key, 1, 0o1666)),
        ("mq_open", lambda: libc.mq_open(b"/b24r-pair", 0o102, 0o666, None)),
    ):
        ctypes.set_errno(0)
        out[name] = [call(), ctypes.get_errno()]
    try:
        os.kill(inputs["pid"], signal.SIGKILL)
        out["kill"] = "sent"
    except OSError as exc:
        out["kill"] = type(exc).__name__
    return out
'''
report = {}
for name, bwrap in (("bwrap", None), ("plain", False)):
    with SandboxPool(2, caps=SandboxLimits(wall_seconds=5), language_hardening=False, bwrap=bwrap) as pool:
        victim = pool._idle[0].pid  # runs are given the oldest spare first: the holder's worker
        held = {}
        holder = threading.Thread(target=lambda: held.update(pool.run(HOLD, {}, context={}).outputs))
        holder.start()
        time.sleep(0.4)  # the holder's run is under way in its worker
        attack = pool.run(ATTACK, {"pid": victim}, context={}).outputs
        holder.join()
        detail = pool.health()["isolation_detail"]
        report[name] = {
            "level": pool.isolation_level, "victim": victim, "held": held, "attack": attack,
            "pid_per_worker": detail.get("pid_per_worker"), "warning": detail.get("warning"),
        }

# Without seccomp, what a worker's own IPC namespace holds alone: the first one makes a queue under
# a key, the second one looks the key up.
MAKE = '''def run(inputs, ctx):
    import ctypes, time
    libc = ctypes.CDLL(None, use_errno=True)
    made = libc.msgget(0x62323473, 0o1600)
    time.sleep(1.0)
    if made >= 0:
        libc.msgctl(made, 0, None)  # IPC_RMID
    return {"made": made}
'''
LOOK = '''def run(inputs, ctx):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    ctypes.set_errno(0)
    return {"found": [libc.msgget(0x62323473, 0), ctypes.get_errno()]}
'''
for name, bwrap in (("bwrap-no-seccomp", None), ("plain-no-seccomp", False)):
    with SandboxPool(2, language_hardening=False, bwrap=bwrap, seccomp=False) as pool:
        made = {}
        maker = threading.Thread(target=lambda: made.update(pool.run(MAKE, {}, context={}).outputs))
        maker.start()
        time.sleep(0.4)
        looked = pool.run(LOOK, {}, context={}).outputs
        maker.join()
        detail = pool.health()["isolation_detail"]
        report[name] = {"ipc_per_worker": detail.get("ipc_per_worker"), **made, **looked}
print(json.dumps(report))
"""


@pytest.mark.skipif(not IS_ROOT, reason="the suite is not root: every sandbox test here already runs unprivileged")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed to drop to nobody")
def test_not_root_one_worker_cannot_signal_another_or_meet_it_over_ipc() -> None:
    """Not root, workers share one uid (and, under bubblewrap, one pid and IPC namespace): the level
    reached is seccomp between workers. Portal B's run, with the language layer off, tries to kill
    portal A's running worker and to open the SysV and POSIX queues A would use: all refused, and
    A's run ends normally."""
    report = _report_as_nobody(PAIR)
    levels = ["plain", "bwrap"] if shutil.which("bwrap") else ["plain"]
    assert report["plain"]["level"] == "seccomp"
    if shutil.which("bwrap"):
        assert report["bwrap"]["level"] == "bwrap+seccomp"
    for name in levels:
        level = report[name]
        # A's run was not killed; in a pid namespace of its own it is pid 1 there
        assert level["held"] == {"pid": 1 if level["pid_per_worker"] else level["victim"]}, level
        if level["pid_per_worker"]:
            assert "a user, pid, IPC and mount namespace of its own" in level["warning"], level["warning"]
        attack = level["attack"]
        assert attack["kill"] == "PermissionError", level
        for call in ("msgget", "shmget", "semget", "mq_open"):
            assert attack[call] == [-1, errno.EPERM], (name, call, attack[call])
    # where the kernel gives workers user namespaces, each has its IPC namespace too: a queue one
    # made is not there for the other even with seccomp off
    if int(Path("/proc/sys/user/max_user_namespaces").read_text()) > 0:
        assert report["plain-no-seccomp"]["ipc_per_worker"] is True  # the kernel allows it: it is used
    for name in ("plain-no-seccomp", "bwrap-no-seccomp") if shutil.which("bwrap") else ("plain-no-seccomp",):
        level = report[name]
        if level["ipc_per_worker"]:
            assert level["made"] >= 0 and level["found"] == [-1, errno.ENOENT], (name, level)


NAMESPACES = """
import json, sys, threading, time
from pathlib import Path
sys.path[:0] = %(paths)r
from b24robots.sandbox import SandboxLimits, SandboxPool
from b24robots.errors import SandboxLimitExceeded

def descendants(root, with_root=False):
    # (pid, start time) of every process below `root` (and of `root`), from the host's process table
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry.name)] = (int(fields[1]), fields[19], fields[0])
    below, changed = {root}, True
    while changed:
        grown = below | {pid for pid, (ppid, _, _) in table.items() if ppid in below}
        changed, below = grown != below, grown
    if not with_root:
        below.discard(root)
    return {(pid, table[pid][1]) for pid in below if pid in table and table[pid][2] != "Z"}

def alive(processes):
    left = set()
    for pid, started in processes:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == started and fields[0] != "Z":
            left.add(pid)
    return sorted(left)

VICTIM = '''def run(inputs, ctx):
    import os, time
    ctx.call("here", {})
    time.sleep(1.5)
    return {"pid": os.getpid(), "ppid": os.getppid()}
'''
ATTACK = '''def run(inputs, ctx):
    import ctypes, errno, os, resource, signal
    libc = ctypes.CDLL(None, use_errno=True)
    target = inputs["pid"]

    def attempt(action):
        try:
            action()
            return "ok"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))

    def ptrace():
        if libc.ptrace(16, target, 0, 0) != 0:  # PTRACE_ATTACH
            raise OSError(ctypes.get_errno(), "ptrace")
        libc.ptrace(17, target, 0, 0)

    return {
        "self": os.getpid(),
        "signal-0": attempt(lambda: os.kill(target, 0)),
        "kill": attempt(lambda: os.kill(target, signal.SIGKILL)),
        "prlimit": attempt(lambda: resource.prlimit(target, resource.RLIMIT_AS, (1 << 20, 1 << 20))),
        "setpriority": attempt(lambda: os.setpriority(os.PRIO_PROCESS, target, 19)),
        "ptrace": attempt(ptrace),
        "signal-0-all": attempt(lambda: os.kill(-1, 0)),
        "proc-mem": attempt(lambda: open(f"/proc/{target}/mem", "rb").close()),
    }
'''
# A robot that tries to outlive its run: it leaves its process group with a forked child that
# spins, ignores the signals of the run's own timers, and spins itself.
STAY = '''def run(inputs, ctx):
    import os, signal
    for sig in (signal.SIGALRM, signal.SIGPROF, signal.SIGTERM, signal.SIGXCPU):
        signal.signal(sig, signal.SIG_IGN)
    if os.fork() == 0:
        os.setsid()
        while True:
            pass
    ctx.call("forked", {})
    while True:
        pass
'''
# Spins with the CPU timer's and the soft rlimit's signals ignored: the hard CPU rlimit's SIGKILL
# ends it, and the zygote's wait4 of the adopted worker says it used up its CPU.
SPIN = '''def run(inputs, ctx):
    import signal
    for sig in (signal.SIGPROF, signal.SIGXCPU, signal.SIGALRM):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        pass
'''
NORMAL = "def run(inputs, ctx):\\n    return {'ok': True}\\n"
report = {}
for name, bwrap in (("bwrap", None), ("plain", False)):
    caps = SandboxLimits(cpu_seconds=20, wall_seconds=10)
    with SandboxPool(2, caps=caps, language_hardening=False, bwrap=bwrap, seccomp=False) as pool:
        detail = pool.health()["isolation_detail"]
        victim_pid = pool._idle[0].pid  # runs are given the oldest spare first: the victim's worker
        held, arrived = {}, threading.Event()
        holder = threading.Thread(
            target=lambda: held.update(pool.run(VICTIM, {}, context={}, on_call=lambda m, p: arrived.set()).outputs)
        )
        holder.start()
        arrived.wait(20)
        attack = pool.run(ATTACK, {"pid": victim_pid}, context={}).outputs
        holder.join(20)

        inside = set()
        def on_forked(method, params):
            # the robot's child is pid 2 of the deepest pid namespaces (the workers'), the robot pid 1
            found = {}
            for pid, started in descendants(pool._zygote.process.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                line = next(line for line in status.splitlines() if line.startswith("NSpid:"))
                found[pid] = (started, line.split()[1:])
            depth = max(len(nspids) for _, nspids in found.values())
            for pid, (started, nspids) in found.items():
                if len(nspids) == depth and nspids[-1] == "2":
                    robot = descendants(pool._zygote.process.pid, with_root=True)
                    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    inside.update({(pid, started), *(p for p in robot if p[0] == parent)})
        started = time.monotonic()
        try:
            pool.run(STAY, {}, context={}, limits=SandboxLimits(cpu_seconds=20, wall_seconds=1), on_call=on_forked)
            ended = "returned"
        except SandboxLimitExceeded as exc:
            ended = exc.limit
        took = time.monotonic() - started
        deadline = time.monotonic() + 5
        while alive(inside) and time.monotonic() < deadline:
            time.sleep(0.05)
        stayed = alive(inside)
        try:
            pool.run(SPIN, {}, context={}, limits=SandboxLimits(cpu_seconds=1, wall_seconds=8))
            spun = "returned"
        except SandboxLimitExceeded as exc:
            spun = exc.limit
        after = pool.run(NORMAL, {}, context={}).outputs
        everything = descendants(__import__("os").getpid())
    deadline = time.monotonic() + 5
    while alive(everything) and time.monotonic() < deadline:
        time.sleep(0.05)
    report[name] = {
        "level": pool.isolation_level, "detail": detail, "victim": victim_pid, "held": held,
        "attack": attack, "ended": ended, "took": took, "inside": len(inside), "stayed": stayed,
        "spun": spun, "after": after, "pool_processes": len(everything), "left_behind": alive(everything),
    }
print(json.dumps(report))
"""


@pytest.mark.skipif(not IS_ROOT, reason="the suite is not root: every sandbox test here already runs unprivileged")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed to drop to nobody")
@pytest.mark.skipif(
    int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0,
    reason="the kernel refuses unprivileged user namespaces: no namespaces per worker, seccomp holds alone",
)
def test_not_root_each_worker_has_a_pid_namespace_of_its_own() -> None:
    """Not root, with the language layer and seccomp off: each worker is pid 1 of its own pid
    namespace, so another worker's pid is not there to signal, renice, limit or trace; the wall
    limit still ends a robot that ignores its timers and forks a child out of its process group,
    and nothing the pool started outlives it."""
    report = _report_as_nobody(NAMESPACES)
    levels = ["plain", "bwrap"] if shutil.which("bwrap") else ["plain"]
    if shutil.which("bwrap"):
        assert report["bwrap"]["level"] == "bwrap"  # seccomp is off: bubblewrap and the namespaces hold
    for name in levels:
        level = report[name]
        detail = level["detail"]
        assert detail["pid_per_worker"] is True and detail["ipc_per_worker"] is True, (name, detail)
        assert "pid, IPC and mount namespace of its own" in detail["warning"], detail["warning"]
        assert level["held"] == {"pid": 1, "ppid": 0}, level  # the first run ended normally, as pid 1
        attack = level["attack"]
        assert attack["self"] == 1
        for call in ("signal-0", "kill", "prlimit", "setpriority", "ptrace", "signal-0-all"):
            assert attack[call] == "ESRCH", (name, call, attack)
        # no /proc at all in a worker's root of its own (with the host's /proc, the victim's memory
        # would still be refused: it is another user namespace's)
        expected = "ENOENT" if detail["root_per_worker"] else "EACCES"
        assert attack["proc-mem"] == expected, (name, attack)
        assert level["ended"] == "timeout", level
        assert level["took"] < 1.0 + 0.5 + 3.0, level  # wall limit + grace + a loaded machine's slack
        assert level["inside"] == 2 and level["stayed"] == [], level  # the robot and its child, both gone
        assert level["spun"] == "cpu", level  # the rlimit's SIGKILL reaches pid 1; wait4 counts its CPU
        assert level["after"] == {"ok": True}
        assert level["pool_processes"] >= 2 and level["left_behind"] == [], level


FILES = """
import json, os, sys, tempfile, threading, time
sys.path[:0] = %(paths)r
from b24robots.sandbox import SandboxLimits, SandboxPool

MARK = "b24r-fs-mark-" + str(os.getpid())
# Leaves a file in /tmp, in its working directory and in /dev/shm, and says where they are.
LEAVE = '''def run(inputs, ctx):
    import os
    out = {"cwd": os.getcwd()}
    for where in ("/tmp/" + inputs["mark"], inputs["mark"], "/dev/shm/" + inputs["mark"]):
        try:
            with open(where, "w") as f:
                f.write("secret of run A")
            out[where] = "written"
        except OSError as exc:
            out[where] = type(exc).__name__ + ": " + exc.strerror
    out["tmp"] = sorted(os.listdir("/tmp"))
    if inputs.get("hold"):
        ctx.call("written", out)  # the other run looks now
        ctx.call("wait", {})
    return out
'''
# Looks for what LEAVE left, by every path it can think of.
LOOK = '''def run(inputs, ctx):
    import ctypes, errno, os
    mark, cwd, pid = inputs["mark"], inputs["cwd"], inputs.get("pid")

    def attempt(action):
        try:
            return ["ok", action()]
        except OSError as exc:
            return [errno.errorcode.get(exc.errno, str(exc.errno))]

    def read(path):
        with open(path) as f:
            return f.read()

    paths = {"tmp": "/tmp/" + mark, "cwd": os.path.join(cwd, mark), "shm": "/dev/shm/" + mark}
    if pid:
        paths["proc-root"] = f"/proc/{pid}/root/tmp/{mark}"
        paths["proc-cwd"] = f"/proc/{pid}/cwd/{mark}"
    out = {"own-cwd": os.getcwd(), "tmp-list": sorted(os.listdir("/tmp"))}
    out["cwd-parent"] = attempt(lambda: sorted(os.listdir(os.path.dirname(cwd))))
    out["cwd-dir"] = attempt(lambda: sorted(os.listdir(cwd)))
    for name, path in paths.items():
        out[name] = attempt(lambda: read(path))
    # seccomp is off here: could it uncover what is under its private /tmp?
    libc = ctypes.CDLL(None, use_errno=True)
    ctypes.set_errno(0)
    out["umount"] = [libc.umount2(b"/tmp", 2), errno.errorcode.get(ctypes.get_errno())]  # MNT_DETACH
    out["tmp-after-umount"] = sorted(os.listdir("/tmp"))
    return out
'''
FILL = '''def run(inputs, ctx):
    import os
    out = {}
    for where in ("/tmp/fill", "fill"):
        written = 0
        try:
            for i in range(4):
                with open(where + str(i), "wb") as f:
                    for _ in range(9):
                        f.write(b"x" * 100_000)
                        f.flush()
                        written += 100_000
            out[where] = ["ok", written]
        except OSError as exc:
            out[where] = [type(exc).__name__, exc.errno, written]
    return out
'''
report = {}
for name, bwrap in (("bwrap", None), ("plain", False)):
    mark = MARK + "-" + name
    caps = SandboxLimits(cpu_seconds=10, wall_seconds=10, file_size_mb=1)
    with SandboxPool(1, caps=caps, language_hardening=False, bwrap=bwrap, seccomp=False) as pool:
        detail = pool.health()["isolation_detail"]
        base = pool._zygote.base
        left = pool.run(LEAVE, {"mark": mark}, context={}).outputs
        next_run = pool.run(LOOK, {"mark": mark, "cwd": left["cwd"]}, context={}).outputs
        filled = pool.run(FILL, {}, context={}).outputs
    with SandboxPool(2, caps=caps, language_hardening=False, bwrap=bwrap, seccomp=False) as pool:
        holder_pid = pool._idle[0].pid  # runs are given the oldest spare first: the holder's worker
        written, release, held = {}, threading.Event(), {}

        def on_call(method, params):
            if method == "written":
                written.update(params)
            else:
                release.wait(20)
            return {}

        hold = {"mark": mark + "-2", "hold": True}
        holder = threading.Thread(
            target=lambda: held.update(pool.run(LEAVE, hold, context={}, on_call=on_call).outputs)
        )
        holder.start()
        deadline = time.monotonic() + 20
        while not written and time.monotonic() < deadline:
            time.sleep(0.02)
        look = {"mark": mark + "-2", "cwd": written.get("cwd", "/"), "pid": holder_pid}
        concurrent = pool.run(LOOK, look, context={}).outputs
        release.set()
        holder.join(20)
        base2 = pool._zygote.base
    host = {
        where: os.path.exists(where)
        for where in ("/tmp/" + mark, "/tmp/" + mark + "-2", "/dev/shm/" + mark, "/dev/shm/" + mark + "-2")
    }
    report[name] = {
        "detail": detail, "left": left, "next": next_run, "filled": filled, "written": written,
        "held": held, "concurrent": concurrent, "host": host,
        "bases": [b for b in (base, base2) if b], "bases_left": [b for b in (base, base2) if b and os.path.exists(b)],
    }
print(json.dumps(report))
"""


@pytest.mark.skipif(not IS_ROOT, reason="the suite is not root: every sandbox test here already runs unprivileged")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed to drop to nobody")
@pytest.mark.skipif(
    int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0,
    reason="the kernel refuses unprivileged user namespaces: workers share their writable files, seccomp holds alone",
)
def test_not_root_each_worker_has_files_of_its_own() -> None:
    """Not root, with the language layer and seccomp off, workers share one uid, so only a mount
    namespace of its own keeps one run's files from another's: a file run A leaves in /tmp, its
    working directory or /dev/shm is not there for the next run nor, while A runs, for a concurrent
    one (not through /proc either), /tmp is size-limited, and nothing is left on the host."""
    report = _report_as_nobody(FILES)
    levels = ["plain", "bwrap"] if shutil.which("bwrap") else ["plain"]
    for name in levels:
        level = report[name]
        detail = level["detail"]
        assert detail["fs_per_worker"] is True, (name, detail)
        assert "mount namespace of its own" in detail["warning"], detail["warning"]
        mark = next(key for key in level["left"] if key.startswith("/tmp/"))
        local = mark.removeprefix("/tmp/")
        assert level["left"][mark] == "written" and level["left"][local] == "written", level["left"]
        assert level["left"]["cwd"] == "/tmp" and level["left"]["tmp"] == [local], level["left"]
        # /dev/shm is absent from a root of its own (else an empty read-only tmpfs): POSIX shared
        # memory is no channel either
        shm = "FileNotFoundError: No such file" if detail["root_per_worker"] else "OSError: Read-only"
        assert level["left"]["/dev/shm/" + local].startswith(shm), level["left"]
        # the next run, in the same pool, finds nothing of A's
        after = level["next"]
        assert after["tmp-list"] == [] and after["own-cwd"] == "/tmp", (name, after)
        for where in ("tmp", "cwd", "shm"):
            assert after[where] == ["ENOENT"], (name, where, after)
        # two at once: B sees neither A's /tmp nor its working directory, not even through /proc
        # (its root of its own has no /proc)
        assert level["written"]["cwd"] == "/tmp", level["written"]
        now = level["concurrent"]
        assert now["tmp-list"] == [] and now["cwd-dir"] == ["ok", []], (name, now)
        for where in ("tmp", "cwd", "shm"):
            assert now[where] == ["ENOENT"], (name, where, now)
        assert now["proc-root"] == ["ENOENT"] and now["proc-cwd"] == ["ENOENT"], (name, now)
        # without seccomp it still cannot unmount its view: it gave up its namespace's capabilities
        assert now["umount"] == [-1, "EPERM"] and now["tmp-after-umount"] == [], (name, now)
        assert level["held"]["/tmp/" + local + "-2"] == "written", level["held"]  # A's run ended normally
        # /tmp holds file_size_mb (1 MiB) in all: the second 900 kB file does not fit
        for where in ("/tmp/fill", "fill"):
            kind, code, written = level["filled"][where]
            assert kind == "OSError" and code in (errno.ENOSPC, errno.EFBIG), (name, where, level["filled"])
            assert 900_000 <= written < 2 * 1024 * 1024, (name, where, level["filled"])
        # nothing on the host: not the files, not the zygote's directories
        assert not any(level["host"].values()), (name, level["host"])
        assert level["bases_left"] == [], (name, level)
    if shutil.which("bwrap"):
        assert report["plain"]["bases"], report["plain"]  # without bubblewrap the zygote made them


ROOT = """
import json, os, sys, threading, time
sys.path[:0] = %(paths)r
from b24robots.sandbox import SandboxLimits, SandboxPool
import b24robots.sandbox as sandbox_pkg

DATA = %(data)r
# What a worker's root may hold: the interpreter's paths (the system's, this interpreter's prefix,
# the sandbox package), its devices and its /tmp; nothing of the host besides.
package = os.path.dirname(os.path.realpath(sandbox_pkg.__file__))
tops = {"bin", "lib", "lib64", "usr"} & set(os.listdir("/"))
tops |= {sys.base_prefix.split("/")[1], package.split("/")[1], "dev", "tmp"}
# Looks at the host's data directory and the tree it can see; writes where it should not.
PEEK = '''def run(inputs, ctx):
    import errno, fractions, os, textwrap

    def attempt(action):
        try:
            return ["ok", action()]
        except OSError as exc:
            return [errno.errorcode.get(exc.errno, str(exc.errno))]

    def read(path):
        with open(path) as f:
            return f.read()

    def write(path):
        with open(path, "w") as f:
            return f.write("stored code was here")

    data = inputs["data"]
    out = {
        "root": sorted(os.listdir("/")),
        "dev": attempt(lambda: sorted(os.listdir("/dev"))),
        "proc": attempt(lambda: sorted(os.listdir("/proc"))[:3]),
        "secret": attempt(lambda: read(data + "/secret.key")),
        "list-data": attempt(lambda: os.listdir(data)),
        "write-data": attempt(lambda: write(data + "/planted")),
        "write-root": attempt(lambda: write("/planted")),
        "mkdir-root": attempt(lambda: os.mkdir("/planted-dir")),
        "write-tmp": attempt(lambda: write("/tmp/" + inputs["mark"])),
        "null": attempt(lambda: len(read("/dev/null"))),
        "urandom": attempt(lambda: len(open("/dev/urandom", "rb").read(8))),
        "cwd": os.getcwd(),
        # the standard library still imports (modules the zygote did not load) and works
        "stdlib": [str(fractions.Fraction(3, 6)), textwrap.shorten("a b c d e f", 7)],
    }
    out["echo"] = ctx.call("echo", {"seen": len(out["root"])})
    return out
'''
report = {}
for name, bwrap in (("bwrap", None), ("plain", False)):
    mark = "b24r-root-mark-" + str(os.getpid()) + "-" + name
    caps = SandboxLimits(cpu_seconds=10, wall_seconds=10, file_size_mb=1)
    with SandboxPool(1, caps=caps, language_hardening=False, bwrap=bwrap, seccomp=False) as pool:
        detail = pool.health()["isolation_detail"]
        seen = pool.run(PEEK, {"data": DATA, "mark": mark}, context={}, on_call=lambda m, p: {"m": m, **p}).outputs
    report[name] = {
        "detail": detail, "seen": seen, "tops": sorted(tops),
        "data_after": sorted(os.listdir(DATA)), "host_tmp": os.path.exists("/tmp/" + mark),
    }
print(json.dumps(report))
"""


@pytest.mark.skipif(not IS_ROOT, reason="the suite is not root: every sandbox test here already runs unprivileged")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed to drop to nobody")
@pytest.mark.skipif(
    int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0,
    reason="the kernel refuses unprivileged user namespaces: stored code sees the host's files",
)
def test_not_root_each_worker_sees_only_the_interpreter() -> None:
    """Not root, with the language layer and seccomp off: a directory standing in for the server's
    data directory (open to everyone: 0777, its key file 0644) is neither readable nor writable
    from stored code, because the worker's root is its own (bubblewrap's paths alone, read-only,
    no /proc); the robot still runs normally and nothing is left on the host."""
    checkout = Path(__file__).resolve().parents[2]  # outside /tmp; readable by nobody, or the test skips
    data = Path(tempfile.mkdtemp(prefix=".b24r-data-", dir=checkout))
    try:
        data.chmod(0o777)  # what the worker must not reach even where modes allow it
        (data / "secret.key").write_text("the key that decrypts every portal's tokens")
        (data / "secret.key").chmod(0o644)
        report = _report_as_nobody(ROOT.replace("%(data)r", repr(str(data))))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    levels = ["plain", "bwrap"] if shutil.which("bwrap") else ["plain"]
    for name in levels:
        level, seen = report[name], report[name]["seen"]
        assert level["detail"]["root_per_worker"] is True and level["detail"]["fs_per_worker"] is True, level
        assert "only the interpreter's files" in level["detail"]["warning"], level["detail"]["warning"]
        for what in ("secret", "list-data", "write-data"):
            assert seen[what] == ["ENOENT"], (name, what, seen)
        assert seen["root"] == level["tops"], (name, seen["root"])
        assert seen["dev"] == ["ok", ["null", "urandom", "zero"]], (name, seen)
        assert seen["proc"] == ["ENOENT"], (name, seen)
        assert seen["write-root"] == ["EROFS"] and seen["mkdir-root"] == ["EROFS"], (name, seen)
        assert seen["write-tmp"] == ["ok", 20] and seen["cwd"] == "/tmp", (name, seen)
        assert seen["null"] == ["ok", 0] and seen["urandom"] == ["ok", 8], (name, seen)
        assert seen["stdlib"] == ["1/2", "a [...]"], (name, seen)
        assert seen["echo"] == {"m": "echo", "seen": len(level["tops"])}, (name, seen)
        # nothing planted in the data directory, nothing left in the host's /tmp
        assert level["data_after"] == ["secret.key"] and level["host_tmp"] is False, (name, level)
