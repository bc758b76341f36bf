"""The levels reached without root: the pool run as `nobody` through `setpriv`, at both levels
(bubblewrap and plain), with the language layer off and, for what the namespaces hold alone,
seccomp off too. Each script drives real pools and prints one JSON report the test checks."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from nobody_support import report_as_nobody
from sandbox_support import IS_ROOT

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


@pytest.mark.skipif(not IS_ROOT, reason="the suite is not root: every sandbox test here already runs unprivileged")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed to drop to nobody")
def test_not_root_reports_its_level_and_still_contains_the_basics() -> None:
    """The pool run as `nobody`: the level it reaches, the loud warning, and hostile basics failing."""
    source = str(Path(__file__).resolve())  # readable by nobody, outside bubblewrap's view
    report = report_as_nobody(UNPRIVILEGED.replace("%(source)r", repr(source)))
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
    report = report_as_nobody(PAIR)
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
    report = report_as_nobody(NAMESPACES)
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
