"""How a freshly forked worker locks itself down, and (not root) how it gets namespaces of its own.

Stdlib only, like `_runtime`, which calls it: `own_namespaces` in the process the zygote forked
(it may fork once more, see there), `isolate` in the worker, `adopt` in the zygote.
"""

from __future__ import annotations

import contextlib
import ctypes
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
        namespaces = namespaces or {name: False for name in NAMESPACE_FACTS}
        # with a mount namespace of its own, the private /tmp is where it may write (see `_own_files`)
        os.chdir(PRIVATE_TMP if namespaces.get("tmp_per_worker") else workdir)
        facts.update({name: bool(namespaces.get(name)) for name in NAMESPACE_FACTS})
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


CLONE_NEWUSER, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNS = 0x10000000, 0x08000000, 0x20000000, 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x1, 0x2, 0x4, 0x8, 0x4000, 0x40000
PR_SET_CHILD_SUBREAPER = 36
_PID_LENGTH = struct.Struct("=q")
NAMESPACE_FACTS = ("ipc_per_worker", "pid_per_worker", "fs_per_worker")
PRIVATE_TMP = "/tmp"  # noqa: S108 - a tmpfs of the worker's own, in its own mount namespace
# Other places a worker of the same uid could write and another read, hidden under an empty
# read-only tmpfs: POSIX shared memory (also bubblewrap's /dev/shm) and the host's /var/tmp.
SHARED_WRITABLE = ("/dev/shm", "/var/tmp")  # noqa: S108
_CAP_VERSION_3 = 0x20080522


def own_namespaces(report_fd: int, workdir: str, tmp_bytes: int) -> dict[str, bool]:
    """Not root: give the worker a user, IPC, pid and mount namespace of its own, when the kernel
    allows unprivileged user namespaces (inside bubblewrap's too). Runs in the process the zygote forked.

    IPC: SysV IPC and POSIX queues are private to the worker even without seccomp. Mount: see
    `_own_files` (a private size-limited /tmp, the other workers' directories out of view). Pid: a
    new pid namespace only holds this process's children, so it forks once more; the child is pid 1
    there and becomes the worker (this function returns in it), while this process writes the
    child's pid to `report_fd` and exits at once, without running anything else. The zygote (a child
    subreaper) then adopts the worker, so it kills, waits for and accounts that process itself, as it
    would a worker it forked. Another worker's pids are not in the namespace: signals, `prlimit`,
    `setpriority` and `ptrace` aimed at them fail with ESRCH even without seccomp (the kernel
    compares the global uids, which the workers share, so a user namespace alone did not separate
    them). Killing pid 1 kills every process of the namespace. When the kernel refuses, the pid
    written is 0: this process is the worker, as before."""
    libc = _seccomp.libc()
    facts = dict.fromkeys(NAMESPACE_FACTS, False)
    uid, gid = os.getuid(), os.getgid()  # as the parent namespace sees them, for the maps
    for flags in (
        CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNS,
        CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWPID,  # e.g. /proc/sys/user/max_mnt_namespaces is 0
        CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWNS,  # e.g. /proc/sys/user/max_pid_namespaces is 0
        CLONE_NEWUSER | CLONE_NEWIPC,
    ):
        if libc is not None and libc.unshare(flags) == 0:
            facts["ipc_per_worker"] = True
            facts["pid_per_worker"] = bool(flags & CLONE_NEWPID)
            if flags & CLONE_NEWNS:
                facts.update(_own_files(libc, uid, gid, workdir, tmp_bytes))
            if not _drop_capabilities(libc):
                facts["fs_per_worker"] = False  # without seccomp, it could unmount its view
            break
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


def _own_files(libc: Any, uid: int, gid: int, workdir: str, tmp_bytes: int) -> dict[str, bool]:
    """In a fresh mount namespace (owned by the worker's user namespace): a tmpfs of its own over
    /tmp, `tmp_bytes` at most (host RAM, like bubblewrap's `--size`), which becomes its working
    directory; an empty read-only tmpfs over the zygote's directory of workers' directories when
    that is still in view (no bubblewrap, a temp dir outside /tmp) and over `SHARED_WRITABLE`. So
    nothing a worker writes is visible to another worker or to the next run, and it is gone with
    the worker (the namespace dies with its last process). Workers share one uid, so file modes
    alone could not keep them apart. ``tmp_per_worker`` says the private /tmp is there;
    ``fs_per_worker`` that everything above held."""
    # A tmpfs made in this user namespace only takes files whose owner is mapped there: map the
    # one uid and gid this process has (what an unprivileged process may map; setgroups must be
    # denied first). The ids it sees stay the ones it had.
    for path, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            fd = os.open(f"/proc/self/{path}", os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError:
            return {"tmp_per_worker": False, "fs_per_worker": False}
    # Private propagation first, or the mounts below would show up in the namespace we came from.
    if _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None) != 0:
        return {"tmp_per_worker": False, "fs_per_worker": False}
    secure = MS_NOSUID | MS_NODEV
    if _mount(libc, "tmpfs", PRIVATE_TMP, "tmpfs", secure, f"size={max(1, tmp_bytes)},mode=0700") != 0:
        return {"tmp_per_worker": False, "fs_per_worker": False}
    held = True
    for path in sorted({os.path.dirname(workdir), *SHARED_WRITABLE}):
        if path != PRIVATE_TMP and os.path.isdir(path):  # under /tmp, it is out of view already
            empty = _mount(libc, "tmpfs", path, "tmpfs", secure | MS_NOEXEC | MS_RDONLY, "size=4096,mode=0555")
            held = held and empty == 0
    return {"tmp_per_worker": True, "fs_per_worker": held}


def _mount(libc: Any, source: str | None, target: str, kind: str | None, flags: int, data: str | None) -> int:
    args = [None if text is None else text.encode() for text in (source, target, kind)]
    return int(libc.mount(*args, ctypes.c_ulong(flags), None if data is None else data.encode()))


def _drop_capabilities(libc: Any) -> bool:
    """Give up the capabilities a new user namespace grants (over that namespace only), so stored
    code, even with seccomp off, cannot unmount or remount its private view to see what is under
    it, nor mount anything; a user namespace it makes itself gets only locked copies of these mounts."""
    header = ctypes.create_string_buffer(struct.pack("=Ii", _CAP_VERSION_3, 0))
    data = ctypes.create_string_buffer(24)  # two {effective, permitted, inheritable}, all zero
    return int(libc.capset(header, data)) == 0


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
