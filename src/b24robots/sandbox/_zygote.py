"""The zygote: the fork server the pool starts, which forks one worker per run.

Stdlib only. It imports `_runtime` (everything stored code may use) once, then forks workers on
request; it never runs stored code. Not root, it is a child subreaper: a worker in a pid namespace
of its own is forked by an intermediate process that exits at once (see `_isolation`), and the
zygote adopts, kills, reaps and accounts the worker itself.

Control channel (pool <-> zygote, SOCK_SEQPACKET, one JSON object per packet):
``{"t": "fork", "caps": {...}, "seccomp": bool}`` -> ``{"t": "forked", "pid": n}`` plus the worker's
socket (SCM_RIGHTS);
``{"t": "reap", "pid": n}`` -> ``{"t": "reaped", "pid": n, "signal": .., "exit": .., "cpu": .., ...}``;
``{"t": "release", "pid": n}`` (no answer: a worker that served its run is killed at once and
reaped when it is gone, so the pool never waits for a process to exit); ``{"t": "quit"}``.
EOF on the channel makes the zygote kill its workers and exit.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import tempfile
from typing import Any

from b24robots.sandbox import _isolation, _runtime, _seccomp


def _kill_and_reap(pid: int) -> dict[str, Any]:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)
    try:
        _, status, usage = os.wait4(pid, 0)
    except ChildProcessError:
        return {"t": "reaped", "pid": pid, "signal": 0, "exit": -1, "cpu": 0.0, "maxrss_kb": 0}
    return {
        "t": "reaped",
        "pid": pid,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1,
        "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_kb": usage.ru_maxrss,
    }


def zygote_main(ctrl_fd: int, base: str | None = None, pool_uids: list[int] | None = None) -> None:
    """Serve fork and reap requests on `ctrl_fd` until told to quit or the pool goes away.
    Workers' private directories are made under `base` (the system temp dir when None); as root,
    each live worker gets one of `pool_uids` (the pool's, claimed for it alone) that no other live
    worker holds (a uid is free again once its worker is reaped)."""
    for name in _runtime.PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    _seccomp.prepare()
    with contextlib.suppress(Exception):
        _runtime.warm_up()  # first-use initialisation, once for every worker
    # Objects that exist now are shared copy-on-write with every worker: keep the collector off
    # them, or its first pass in a worker would touch (and copy) every page.
    gc.collect()
    gc.freeze()
    # The pool passes an empty environment, but interpreter start-up may add LC_CTYPE (PEP 538).
    os.environ.clear()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the server's business
    ctrl = socket.socket(fileno=ctrl_fd)
    workdirs: dict[int, str] = {}
    uids: dict[int, int] = {}  # pid -> uid, for the live (not yet reaped) workers
    root = os.geteuid() == 0
    libc = _seccomp.libc()
    if not root and libc is not None:
        # A worker in a pid namespace of its own is its parent's child; made our child when that
        # parent exits (see _own_namespaces). Nothing else is orphaned to us: workers cannot fork
        # (seccomp), and without seccomp what they fork lives in their own pid namespace.
        libc.prctl(_isolation.PR_SET_CHILD_SUBREAPER, 1, None, 0, 0)
    subreaper = not root and libc is not None
    if not root:
        _isolation.prepare_root()  # what each worker's root of its own is made of, looked up once

    released: set[int] = set()  # killed, not yet reaped: their uids stay held until they are gone

    def collect(block: bool) -> None:
        """Reap the released workers that are gone (with `block`, wait for one of them). Only
        those: another worker's status is the pool's to ask for (reap), e.g. why it died."""
        for pid in sorted(released):
            try:
                done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done == 0:
                continue
            block = False
            released.discard(pid)
            uids.pop(pid, None)
            shutil.rmtree(workdirs.pop(pid), ignore_errors=True)

    def free_uid() -> int | None:
        collect(block=False)
        held = set(uids.values())
        uid = next((u for u in pool_uids or () if u not in held), None)
        if uid is None and released:
            collect(block=True)  # every free uid is a killed worker's: it is gone in a moment
            held = set(uids.values())
            uid = next((u for u in pool_uids or () if u not in held), None)
        return uid

    def reply(message: dict[str, Any], fds: list[int] | None = None) -> None:
        socket.send_fds(ctrl, [json.dumps(message).encode()], fds or [])

    reply({"t": "zygote", "pid": os.getpid(), "root": root, "seccomp": _seccomp.supported()})
    try:
        while True:
            try:
                data = ctrl.recv(65536)
            except OSError:
                break
            if not data:
                break
            request = json.loads(data)
            kind = request.get("t")
            if kind == "fork":
                caps = request["caps"]
                seccomp = request.get("seccomp") is not False
                uid = free_uid() if root else None
                if root and uid is None:
                    reply(
                        {"t": "error", "message": f"all {len(pool_uids or ())} sandbox uids are held by live workers"}
                    )
                    continue
                report_r = report_w = None
                try:
                    workdir = tempfile.mkdtemp(prefix="worker-", dir=base)
                    if root:
                        os.chmod(workdir, 0o555)  # noqa: S103 - root's, readable, never writable
                    else:  # the forked process says which pid the worker ends up with
                        report_r, report_w = os.pipe()
                    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                    pid = os.fork()
                except OSError as exc:
                    for fd in (report_r, report_w):
                        if fd is not None:
                            os.close(fd)
                    reply({"t": "error", "message": f"fork failed: {exc}"})
                    continue
                if pid == 0:
                    try:
                        ctrl.close()
                        parent_end.close()
                        if report_r is not None:
                            os.close(report_r)
                        _runtime.worker_main(child_end, workdir, caps, uid, seccomp, report_w)
                    finally:
                        os._exit(4)
                child_end.close()
                if report_r is not None and report_w is not None:
                    os.close(report_w)
                    try:
                        worker = _isolation.adopt(pid, report_r)
                    except OSError as exc:
                        parent_end.close()
                        shutil.rmtree(workdir, ignore_errors=True)
                        reply({"t": "error", "message": f"fork failed: {exc}"})
                        continue
                    if worker == pid and subreaper and libc is not None:
                        # no pid namespace here: what a worker forks (seccomp off) is orphaned to
                        # the host's init, as before, not kept by us as a zombie
                        libc.prctl(_isolation.PR_SET_CHILD_SUBREAPER, 0, None, 0, 0)
                        subreaper = False
                    pid = worker
                workdirs[pid] = workdir
                if uid is not None:
                    uids[pid] = uid
                reply({"t": "forked", "pid": pid}, [parent_end.fileno()])
                parent_end.close()
            elif kind == "release":
                pid = int(request["pid"])
                if pid in workdirs and pid not in released:
                    for kill in (os.killpg, os.kill):
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            kill(pid, signal.SIGKILL)
                    released.add(pid)
                collect(block=False)
            elif kind == "reap":
                pid = int(request["pid"])
                if pid in released:  # released earlier; a status is wanted after all
                    released.discard(pid)
                if pid not in workdirs:
                    reply({"t": "reaped", "pid": pid, "signal": 0, "exit": -1, "cpu": 0.0, "maxrss_kb": 0})
                    continue
                status = _kill_and_reap(pid)
                uids.pop(pid, None)
                shutil.rmtree(workdirs.pop(pid), ignore_errors=True)
                reply(status)
            elif kind == "quit":
                break
    finally:
        for pid, workdir in workdirs.items():
            _kill_and_reap(pid)
            shutil.rmtree(workdir, ignore_errors=True)
    os._exit(0)
