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
import sys
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
MS_REMOUNT, MS_BIND, MNT_DETACH = 0x20, 0x1000, 0x2
PR_SET_CHILD_SUBREAPER = 36
_PID_LENGTH = struct.Struct("=q")
NAMESPACE_FACTS = ("ipc_per_worker", "pid_per_worker", "fs_per_worker", "root_per_worker")
PRIVATE_TMP = "/tmp"  # noqa: S108 - a tmpfs of the worker's own, in its own mount namespace
# Other places a worker of the same uid could write and another read, hidden under an empty
# read-only tmpfs: POSIX shared memory (also bubblewrap's /dev/shm) and the host's /var/tmp.
SHARED_WRITABLE = ("/dev/shm", "/var/tmp")  # noqa: S108
_CAP_VERSION_3 = 0x20080522
# The device nodes a worker's root holds: the worker opens /dev/null for its standard streams
# (`isolate`); /dev/zero and /dev/urandom are what C code falls back to (getrandom is the rule).
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
_ROOT_TMPFS = "size=65536,nr_inodes=256,mode=0755"  # only mount points live there, read-only once made


def view_paths() -> list[str]:
    """The host paths stored code may see, read-only, and nothing else: the system's programs and
    libraries, this interpreter's prefixes and this package. Bubblewrap's view (`_spawn.bwrap_args`)
    and a worker's own root (`_own_root`) are both made of these."""
    here = os.path.dirname(os.path.realpath(__file__))
    paths = {"/usr", "/lib", "/lib64", "/bin", sys.base_prefix, sys.prefix, here}
    return sorted(path for path in paths if os.path.exists(path))


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
                # without seccomp, it could unmount its view, or remount its root writable
                facts["fs_per_worker"] = facts["root_per_worker"] = False
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
    """In a fresh mount namespace (owned by the worker's user namespace): a root of its own made
    of `view_paths` alone (see `_own_root`), with a tmpfs of its own as /tmp, `tmp_bytes` at most
    (host RAM, like bubblewrap's `--size`), which becomes its working directory. Where that root
    cannot be made, the host's tree stays, with the private /tmp over the host's and an empty
    read-only tmpfs over the zygote's directory of workers' directories when that is still in view
    (no bubblewrap, a temp dir outside /tmp) and over `SHARED_WRITABLE`. Either way nothing a
    worker writes is visible to another worker or to the next run, and it is gone with the worker
    (the namespace dies with its last process). Workers share one uid, so file modes alone could
    not keep them apart. ``tmp_per_worker`` says the private /tmp is there; ``fs_per_worker`` that
    everything above held; ``root_per_worker`` that no host path but `view_paths` is in view."""
    failed = {"tmp_per_worker": False, "fs_per_worker": False, "root_per_worker": False}
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
            return failed
    # Private propagation first, or the mounts below would show up in the namespace we came from.
    if _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None) != 0:
        return failed
    if _own_root(libc, tmp_bytes):
        return {"tmp_per_worker": True, "fs_per_worker": True, "root_per_worker": True}
    secure = MS_NOSUID | MS_NODEV
    if _mount(libc, "tmpfs", PRIVATE_TMP, "tmpfs", secure, f"size={max(1, tmp_bytes)},mode=0700") != 0:
        return failed
    held = True
    for path in sorted({os.path.dirname(workdir), *SHARED_WRITABLE}):
        if path != PRIVATE_TMP and os.path.isdir(path):  # under /tmp, it is out of view already
            empty = _mount(libc, "tmpfs", path, "tmpfs", secure | MS_NOEXEC | MS_RDONLY, "size=4096,mode=0555")
            held = held and empty == 0
    return {"tmp_per_worker": True, "fs_per_worker": held, "root_per_worker": False}


def _own_root(libc: Any, tmp_bytes: int) -> bool:
    """Make this mount namespace's root a new one, like bubblewrap's: a tiny tmpfs holding
    read-only binds of `view_paths` (the symlinks among them, e.g. /lib -> usr/lib on a merged
    /usr, stay symlinks), binds of `DEVICES`, a size-limited tmpfs as /tmp, and nothing else (no
    /proc: the worker reads nothing there once its maps are written). `pivot_root` moves into it
    and the old root is detached, so the server's data directory, its database and key file, home
    directories and every other host path are gone from this namespace, whatever the file modes;
    then the new root is remounted read-only. False, with the namespace as it was, when a step
    before the pivot fails; OSError when one after it does (the old root may still be in view,
    so the worker must not run)."""
    pivot_root = _seccomp.syscall_number("pivot_root")
    new = PRIVATE_TMP  # the mount point of the new root: the host's /tmp, in this namespace only
    sources: list[int] = []
    try:
        links, binds = _plan or _root_plan()  # the zygote's, looked up once (`prepare_root`)
        # The sources are opened before the new root covers /tmp (the interpreter or this package
        # may live under it: a checkout in /tmp), here, as a bind takes only a mount of the
        # caller's namespace.
        for path, _ in binds:
            sources.append(os.open(path, os.O_PATH | os.O_CLOEXEC))
    except OSError:
        pivot_root = None
    try:
        if pivot_root is None or _mount(libc, "tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, _ROOT_TMPFS) != 0:
            return False
        try:
            _fill_root(libc, new, links, list(zip(binds, sources, strict=True)), tmp_bytes)
            os.chdir(new)
        except OSError:
            libc.umount2(new.encode(), MNT_DETACH)  # with every bind made under it
            return False
    finally:
        for source in sources:
            os.close(source)
    # pivot_root(".", ".") stacks the old root on the new one, to be detached at once (pivot_root(2))
    if libc.syscall(pivot_root, b".", b".") != 0:
        os.chdir("/")
        libc.umount2(new.encode(), MNT_DETACH)
        return False
    if libc.umount2(b".", MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), "the old root could not be detached")
    os.chdir("/")
    if _mount(libc, None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None) != 0:
        raise OSError(ctypes.get_errno(), "the new root could not be made read-only")
    return True


_Plan = tuple[list[tuple[str, str]], list[tuple[str, int]]]
_plan: _Plan | None = None


def prepare_root() -> None:
    """In the zygote (not root), once: look up what every worker's root is made of (see
    `_root_plan`), so a worker only opens and mounts. Where that fails, each worker tries itself."""
    global _plan
    try:
        _plan = _root_plan()
    except OSError:
        _plan = None


def _root_plan() -> _Plan:
    """The symlinks (path, target) and the binds (path, its locked flags) of the new root:
    `view_paths` resolved, each bound once (a path inside another is in view with it), then
    `DEVICES`."""
    links: list[tuple[str, str]] = []
    reals: set[str] = set()
    for path in view_paths():
        if os.path.islink(path) and os.path.dirname(path) == "/":
            links.append((path, os.readlink(path)))
        reals.add(os.path.realpath(path))
    kept: list[str] = []
    for real in sorted(reals, key=len):
        if not any(real == other or real.startswith(other.rstrip("/") + "/") for other in kept):
            kept.append(real)
    # a bind keeps its source's flags until remounted; noexec, if the host has it, is locked
    return links, [(path, os.statvfs(path).f_flag & MS_NOEXEC) for path in (*sorted(kept), *DEVICES)]


def _fill_root(
    libc: Any, new: str, links: list[tuple[str, str]], binds: list[tuple[tuple[str, int], int]], tmp_bytes: int
) -> None:
    """Populate the new root at `new` (see `_own_root`): `binds` pairs each planned bind with an
    O_PATH descriptor of its source. OSError when a step fails."""
    for path, target in links:
        os.symlink(target, new + path)
    # /tmp first, as bubblewrap's `--tmpfs /tmp` comes before its binds: a view path under /tmp
    # (a checkout there) is bound over the private /tmp, not hidden by it
    os.mkdir(new + PRIVATE_TMP, 0o700)
    tmp = f"size={max(1, tmp_bytes)},mode=0700"
    _check(_mount(libc, "tmpfs", new + PRIVATE_TMP, "tmpfs", MS_NOSUID | MS_NODEV, tmp), PRIVATE_TMP)
    os.mkdir(new + "/dev", 0o755)
    for (path, locked), source in binds:
        target, by_fd = new + path, f"/proc/self/fd/{source}"  # the source by descriptor: see above
        if path in DEVICES:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))  # a mount point
            _check(_mount(libc, by_fd, target, None, MS_BIND, None), path)
            continue
        os.makedirs(target, exist_ok=True)
        _check(_mount(libc, by_fd, target, None, MS_BIND | MS_REC, None), path)
        readonly = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | locked
        _check(_mount(libc, None, target, None, readonly, None), path)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mounting {what} failed: {os.strerror(code)}")


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
