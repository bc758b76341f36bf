"""The files a worker sees without root: the pool run as `nobody` through `setpriv`, at both
levels (bubblewrap and plain), with the language layer and seccomp off, so what holds is the
worker's mount namespace alone. Each script drives real pools and prints one JSON report."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import pytest
from nobody_support import report_as_nobody
from sandbox_support import IS_ROOT

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
def _mount_points_in_tmp() -> set[str]:
    """Entries a worker's /tmp holds besides its own files: where the view's paths that live under the
    host's /tmp (a checkout or virtualenv there, as in a CI clone) are mounted, read-only."""
    from b24robots.sandbox._isolation import view_paths

    return {path.split("/")[2] for path in view_paths() if path.startswith("/tmp/")}


def test_not_root_each_worker_has_files_of_its_own() -> None:
    """Not root, with the language layer and seccomp off, workers share one uid, so only a mount
    namespace of its own keeps one run's files from another's: a file run A leaves in /tmp, its
    working directory or /dev/shm is not there for the next run nor, while A runs, for a concurrent
    one (not through /proc either), /tmp is size-limited, and nothing is left on the host."""
    report = report_as_nobody(FILES)
    views = _mount_points_in_tmp()

    def own(listing: list[str]) -> list[str]:
        return [entry for entry in listing if entry not in views]

    levels = ["plain", "bwrap"] if shutil.which("bwrap") else ["plain"]
    for name in levels:
        level = report[name]
        detail = level["detail"]
        assert detail["fs_per_worker"] is True, (name, detail)
        assert "mount namespace of its own" in detail["warning"], detail["warning"]
        mark = next(key for key in level["left"] if key.startswith("/tmp/"))
        local = mark.removeprefix("/tmp/")
        assert level["left"][mark] == "written" and level["left"][local] == "written", level["left"]
        assert level["left"]["cwd"] == "/tmp" and own(level["left"]["tmp"]) == [local], level["left"]
        # /dev/shm is absent from a root of its own (else an empty read-only tmpfs): POSIX shared
        # memory is no channel either
        shm = "FileNotFoundError: No such file" if detail["root_per_worker"] else "OSError: Read-only"
        assert level["left"]["/dev/shm/" + local].startswith(shm), level["left"]
        # the next run, in the same pool, finds nothing of A's
        after = level["next"]
        assert own(after["tmp-list"]) == [] and after["own-cwd"] == "/tmp", (name, after)
        for where in ("tmp", "cwd", "shm"):
            assert after[where] == ["ENOENT"], (name, where, after)
        # two at once: B sees neither A's /tmp nor its working directory, not even through /proc
        # (its root of its own has no /proc)
        assert level["written"]["cwd"] == "/tmp", level["written"]
        now = level["concurrent"]
        assert own(now["tmp-list"]) == [] and now["cwd-dir"][0] == "ok" and own(now["cwd-dir"][1]) == [], (name, now)
        for where in ("tmp", "cwd", "shm"):
            assert now[where] == ["ENOENT"], (name, where, now)
        assert now["proc-root"] == ["ENOENT"] and now["proc-cwd"] == ["ENOENT"], (name, now)
        # without seccomp it still cannot unmount its view: it gave up its namespace's capabilities
        assert now["umount"] == [-1, "EPERM"] and own(now["tmp-after-umount"]) == [], (name, now)
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
        report = report_as_nobody(ROOT.replace("%(data)r", repr(str(data))))
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
