"""Starting the zygote: the bubblewrap view, the uid range and the control channel.

The pool (pool.py) decides when to fork and reap; this module knows how: the command line of the
zygote, the filesystem it sees, and the messages of the control channel (see _zygote's docstring).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from b24robots.errors import SandboxError
from b24robots.sandbox import _isolation, _wire
from b24robots.sandbox.limits import SandboxLimits

log = logging.getLogger("b24robots.sandbox")

MIB = 1024 * 1024
CONTROL_TIMEOUT = 15.0
#: The uid `nobody`; a worker's reserved range must stay below it (and below 65536, the size of
#: the uid map most container runtimes give their root).
NOBODY = 65534

SANDBOX_DIR = Path(__file__).resolve().parent
_BOOTSTRAP = f"""
import sys, types
for name, path in (("b24robots", {str(SANDBOX_DIR.parent)!r}), ("b24robots.sandbox", {str(SANDBOX_DIR)!r})):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from b24robots.sandbox import _zygote
_zygote.zygote_main(int(sys.argv[1]), sys.argv[2] or None, [int(u) for u in sys.argv[3].split(",") if u])
"""


class Identities:
    """The uids (and equal gids) one pool's workers run as when root, claimed for the pool's life.

    Candidates are ``base`` upward (at most up to `nobody`); a uid is taken only when no other pool
    on this host holds it (an exclusive `flock` on ``<LOCK_DIR>/<uid>.lock``, released with the pool,
    or by the kernel when the process dies) and no user in the passwd database has it. So pools
    in one process, or several servers on one host, never share a worker identity. Within the pool
    each live worker holds one uid no other live worker holds (see `_zygote.zygote_main`).
    The range must not belong to any user, file or process of the host.
    """

    def __init__(self, base: int, count: int) -> None:
        if base < 1000 or count < 1 or base + count > NOBODY:
            raise SandboxError(
                f"the sandbox uid range {base}..{base + count - 1} is invalid: it must lie "
                f"within 1000..{NOBODY - 1} (set B24R_SANDBOX_UID_BASE / B24R_SANDBOX_UID_COUNT)"
            )
        self.base, self.count = base, count
        self.uids: tuple[int, ...] = ()
        self._locks: list[int] = []

    def claim(self) -> None:
        """Take `count` free uids from `base` upward; SandboxError when there are not enough."""
        if self.uids:
            return
        directory = _lock_dir()
        taken: list[int] = []
        skipped: list[str] = []
        for uid in range(self.base, NOBODY):
            if len(taken) == self.count:
                break
            try:
                skipped.append(f"{uid} ({pwd.getpwuid(uid).pw_name})")
                continue
            except KeyError:
                pass
            fd = os.open(directory / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._locks.append(fd)
            taken.append(uid)
        if skipped:
            log.warning("sandbox uids that belong to host users were skipped: %s", ", ".join(skipped[:10]))
        if len(taken) < self.count:
            self.release()
            raise SandboxError(
                f"only {len(taken)} of {self.count} sandbox uids from {self.base} up are free on this host; "
                "lower B24R_SANDBOX_UID_BASE or B24R_SANDBOX_UID_COUNT, or stop the other pools"
            )
        self.uids = tuple(taken)

    def release(self) -> None:
        for fd in self._locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._locks, self.uids = [], ()


def _lock_dir() -> Path:
    """Root's own directory for the uid locks: /run when it exists, else the temp dir."""
    parent = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
    directory = parent / "b24robots-sandbox-uids"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SandboxError(f"{directory} must be a directory of this user's, writable by nobody else")
    return directory


@dataclass
class Child:
    pid: int
    sock: socket.socket
    zygote: Zygote
    isolation: dict[str, Any]
    status: Status | None = None  # set once reaped


@dataclass
class Status:
    signal: int = 0
    exit: int = -1
    cpu: float = 0.0
    maxrss_kb: int = 0


class Zygote:
    """The fork server process and its control channel."""

    def __init__(self, bwrap: str | None, caps: SandboxLimits, identities: Identities, *, seccomp: bool) -> None:
        self.lock = threading.Lock()
        self.seccomp = seccomp
        # Workers' private directories live under one base per zygote, removed with it even if the
        # zygote is killed. Under bubblewrap they live in its own size-limited tmpfs instead.
        self.base = None if bwrap else tempfile.mkdtemp(prefix="b24r-sandbox-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # -I -S: the venv's site-packages are not wanted, so the real interpreter serves, and its
        # path is under sys.base_prefix, which is bound into bubblewrap's view
        command = [
            os.path.realpath(sys.executable),
            "-I",
            "-S",
            "-c",
            _BOOTSTRAP,
            str(theirs.fileno()),
            self.base or "",
            ",".join(map(str, identities.uids)),
        ]
        if bwrap:
            command = [bwrap, *bwrap_args(caps), "--", *command]
        try:
            self.process = subprocess.Popen(
                command,
                pass_fds=[theirs.fileno()],
                env={},
                cwd="/",
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.sock.settimeout(CONTROL_TIMEOUT)
        try:
            self.hello, _ = self._receive()
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _receive(self) -> tuple[dict[str, Any], list[int]]:
        data, fds, _, _ = socket.recv_fds(self.sock, 65536, 1)
        if not data:
            raise SandboxError("the sandbox zygote exited")
        try:
            return _wire.loads(data), fds
        except _wire.WireError as exc:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"the sandbox zygote sent a malformed message: {exc.reason}") from None

    def request(self, message: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        with self.lock:
            try:
                self.sock.sendall(json.dumps(message).encode())
                return self._receive()
            except (OSError, ValueError) as exc:
                raise SandboxError(f"the sandbox zygote stopped answering: {exc}") from exc

    def fork(self, caps: SandboxLimits) -> Child:
        reply, fds = self.request({"t": "fork", "caps": caps.as_dict(), "seccomp": self.seccomp})
        if reply.get("t") != "forked" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"the sandbox zygote could not fork a child: {reply.get('message', '?')}")
        sock = socket.socket(fileno=fds[0])
        pid = reply.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            sock.close()
            raise SandboxError("the sandbox zygote sent a malformed fork reply")
        sock.settimeout(CONTROL_TIMEOUT)
        try:
            hello = _wire.recv(sock, 65536)
            isolation = dict(hello.get("isolation") or {})
        except (OSError, _wire.WireError, TypeError, ValueError) as exc:
            sock.close()
            self.reap(pid)
            raise SandboxError(f"a sandbox child failed to start: {exc}") from exc
        if hello.get("t") != "ready":
            sock.close()
            self.reap(pid)
            raise SandboxError(f"a sandbox child failed to isolate itself: {hello.get('message', '?')}")
        return Child(pid=pid, sock=sock, zygote=self, isolation=isolation)

    def release(self, pid: int) -> None:
        """Have a worker that served its run killed; the zygote reaps it once it is gone (no answer
        is awaited: a used worker costs the pool one message, not a wait for a process to exit)."""
        with self.lock:
            try:
                self.sock.sendall(json.dumps({"t": "release", "pid": pid}).encode())
            except OSError as exc:
                raise SandboxError(f"the sandbox zygote stopped answering: {exc}") from exc

    def reap(self, pid: int) -> Status:
        reply, _ = self.request({"t": "reap", "pid": pid})
        try:
            return Status(
                signal=int(reply.get("signal", 0)),
                exit=int(reply.get("exit", -1)),
                cpu=float(reply.get("cpu", 0.0)),
                maxrss_kb=int(reply.get("maxrss_kb", 0)),
            )
        except (TypeError, ValueError):
            raise SandboxError("the sandbox zygote sent a malformed reap reply") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(json.dumps({"t": "quit"}).encode())
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait()
        self.sock.close()
        self.discard()

    def discard(self) -> None:
        """Remove the workers' directories (after the zygote is gone)."""
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)


def tmpfs_bytes(caps: SandboxLimits) -> int:
    """The size of the one writable place under bubblewrap, shared by the pool's workers.

    As root nothing is written there (workers' roots are read-only); not root, workers' working
    directories live there, so what they write is bounded in total, not only per file.
    """
    return max(1, caps.file_size_mb) * MIB


def bwrap_args(caps: SandboxLimits) -> list[str]:
    """A bubblewrap view with no network, a read-only root and a tiny size-limited /tmp."""
    # As root, skip the user namespace: workers must still drop to real uids of their own.
    if os.geteuid() == 0:
        args = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        args = ["--unshare-all"]
    # A fresh tmpfs inside the namespace, not the host's /tmp, and never bigger than `--size`
    # (a tmpfs is host RAM: unbounded, files there outgrow RLIMIT_AS).
    args += ["--die-with-parent", "--dev", "/dev", "--proc", "/proc"]
    args += ["--size", str(tmpfs_bytes(caps)), "--tmpfs", "/tmp"]  # noqa: S108
    for path in _isolation.view_paths():  # the same paths as a worker's own root without bubblewrap
        args += ["--ro-bind", path, path]
    # bubblewrap's own root (where the mount points above were made) is a writable tmpfs too
    args += ["--remount-ro", "/"]
    return args
