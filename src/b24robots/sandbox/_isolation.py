"""How a freshly forked worker locks itself down, and (not root) how it gets namespaces of its own.

Stdlib only, like `_runtime`, which calls it: `own_namespaces` in the process the zygote forked
(it may fork once more, see there), `isolate` in the worker, `adopt` in the zygote.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any

from b24robots.sandbox import _seccomp

MIB = 1024 * 1024


def isolate(
    sock: socket.socket,
    workdir: str,
    caps: dict[str, Any],
    uid: int | None,
    seccomp: bool,
    namespaces: dict[str, bool] | None,
    timers: dict[signal.Signals, Callable[[int, Any], None]],
) -> dict[str, Any]:
    """Lock this freshly forked process down; return what was achieved. `uid` (root only) is this
    worker's own: no other live worker has it, so even without seccomp it cannot signal, ptrace or
    prlimit another worker, nor open what another one made. `namespaces` (not root) is what
    `own_namespaces` achieved before this process was forked."""
    facts: dict[str, Any] = {"chroot": False, "uid_dropped": False, "seccomp": False, "readonly_root": False}
    os.setsid()
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)
    random.seed()
    if os.geteuid() == 0 and uid is not None:
        # The directory is root's and r-x for others: the root the worker sees is empty and
        # unwritable, so nothing it writes can outgrow RLIMIT_AS as files in a tmpfs (host RAM).
        os.chroot(workdir)
        os.chdir("/")
        facts["chroot"] = facts["readonly_root"] = True
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        facts["uid_dropped"] = True
        facts["uid"] = os.getuid()
    else:
        os.chdir(workdir)
        facts.update(namespaces or {"ipc_per_worker": False, "pid_per_worker": False})
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Hard limits are the pool's caps; each run lowers the soft limits. RLIMIT_NPROC is left alone:
    # root ignores it, seccomp already refuses new processes and threads are bounded by RLIMIT_AS.
    resource.setrlimit(resource.RLIMIT_AS, (caps["memory_mb"] * MIB,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (caps["file_size_mb"] * MIB,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (caps["open_files"],) * 2)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE fail with EFBIG instead
    for signum, handler in timers.items():  # the run's timers (SIGPROF, SIGALRM)
        signal.signal(signum, handler)
    if not seccomp:
        facts["seccomp_error"] = "switched off (a test of the identity layer alone)"
    elif _seccomp.supported():
        try:
            _seccomp.install()
            facts["seccomp"] = True
        except OSError as exc:
            facts["seccomp_error"] = str(exc)
    return facts


CLONE_NEWUSER, CLONE_NEWIPC, CLONE_NEWPID = 0x10000000, 0x08000000, 0x20000000
PR_SET_CHILD_SUBREAPER = 36
_PID_LENGTH = struct.Struct("=q")


def own_namespaces(report_fd: int) -> dict[str, bool]:
    """Not root: give the worker a user, IPC and pid namespace of its own, when the kernel allows
    unprivileged user namespaces (inside bubblewrap's too). Runs in the process the zygote forked.

    IPC: SysV IPC and POSIX queues are private to the worker even without seccomp. Pid: a new pid
    namespace only holds this process's children, so it forks once more; the child is pid 1 there
    and becomes the worker (this function returns in it), while this process writes the child's pid
    to `report_fd` and exits at once, without running anything else. The zygote (a child subreaper)
    then adopts the worker, so it kills, waits for and accounts that process itself, as it would a
    worker it forked. Another worker's pids are not in the namespace: signals, `prlimit`,
    `setpriority` and `ptrace` aimed at them fail with ESRCH even without seccomp (the kernel
    compares the global uids, which the workers share, so a user namespace alone did not separate
    them). Killing pid 1 kills every process of the namespace. When the kernel refuses, the pid
    written is 0: this process is the worker, as before."""
    libc = _seccomp.libc()
    facts = {"ipc_per_worker": False, "pid_per_worker": False}
    if libc is not None and libc.unshare(CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWPID) == 0:
        facts = {"ipc_per_worker": True, "pid_per_worker": True}
    elif libc is not None and libc.unshare(CLONE_NEWUSER | CLONE_NEWIPC) == 0:
        facts["ipc_per_worker"] = True  # e.g. /proc/sys/user/max_pid_namespaces is 0
    if not facts["pid_per_worker"]:
        os.write(report_fd, _PID_LENGTH.pack(0))
        os.close(report_fd)
        return facts
    pid = os.fork()
    if pid:
        os.write(report_fd, _PID_LENGTH.pack(pid))
        os._exit(0)
    os.close(report_fd)
    return facts


def adopt(forked: int, report_r: int) -> int:
    """The pid of the worker `forked` became (not root): its child in a new pid namespace, adopted
    by the zygote once `forked` exits, or `forked` itself. Raises OSError when it died first."""
    try:
        data = os.read(report_r, _PID_LENGTH.size)
    finally:
        os.close(report_r)
    worker = _PID_LENGTH.unpack(data)[0] if len(data) == _PID_LENGTH.size else -1
    if worker == 0:
        return forked
    with contextlib.suppress(ChildProcessError):
        os.waitpid(forked, 0)  # it exits right after writing; its child is ours from then on
    if worker < 0:
        raise OSError(errno.ECHILD, "the worker exited before it reported its pid")
    return worker
