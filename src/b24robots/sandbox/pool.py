"""The parent side: a pool of pre-forked isolated children, one fresh process per run.

One zygote process per pool (a clean ``python -I -S``, started without environment) imports
everything once and forks workers on request. Each worker locks itself down right after the fork
and then serves exactly one run: nothing a run does (patched modules, random state, files,
threads, frames queued on its socket) can be seen by the next one, which gets another process.
One refiller thread per slot keeps ``size`` workers forked ahead of demand (while one waits
for its worker to isolate itself, the zygote forks the next) and has used ones killed by the
zygote, which reaps them once they are gone; so a run costs a socket round trip, not a fork,
let alone an interpreter start. What the child's frames mean is in _outcome.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from b24robots.errors import (
    SandboxError,
)
from b24robots.sandbox import _wire
from b24robots.sandbox._outcome import check_frame, death_error, error_of, limit_error, result_of
from b24robots.sandbox._spawn import Child, Identities, Status, Zygote
from b24robots.sandbox.limits import SandboxLimits, SandboxResult
from b24robots.sandbox.proxy import REQUEST_KINDS, HostRaised, RunProxy

log = logging.getLogger("b24robots.sandbox")

_GRACE_SECONDS = 0.5
_CONTROL_TIMEOUT = 15.0
_CHECKOUT_TIMEOUT = 30.0
_LOG_SLACK = _wire.LOG_FRAME_BYTES + 4096
_CREDENTIAL = re.compile(r"token|secret|password|passwd|credential|^auth$|client_id", re.IGNORECASE)

# ctx attributes of stored code that a context value must not shadow
RESERVED_CONTEXT_KEYS = (
    *("log", "call", "batch", "fire_trigger", "start_workflow", "RestError"),
    *("http", "onec", "sql", "ConnectionError"),
)


@dataclass
class _Stats:
    runs: int = 0
    recycled: int = 0
    failures: int = 0
    zygote_restarts: int = 0
    isolation: dict[str, Any] = field(default_factory=dict)


class SandboxPool:
    """A warm pool of isolated children running stored code. Thread-safe; `run` blocks.

    `caps` are the global limits; per-call limits are clamped to them. `language_hardening=False`
    turns off the in-language layer (restricted builtins, import allow-list, source check) and
    exists only to test that the OS layer holds on its own; never use it in production.
    `bwrap` chooses bubblewrap: None uses it when it is on PATH and works.

    As root every worker runs as a uid of its own: the pool claims `uid_count` uids (default 4 x
    `size`, enough for the idle, busy and not yet reaped workers) from `uid_base` upward that no
    other pool on the host holds (see `Identities`); that range must be unused on the host.
    `seccomp=False` skips the system-call filter and exists only to test that the per-worker
    identity holds on its own; never use it in production.
    """

    def __init__(
        self,
        size: int = 2,
        *,
        caps: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen, shared safely
        language_hardening: bool = True,
        bwrap: bool | None = None,
        uid_base: int = 60000,
        uid_count: int | None = None,
        seccomp: bool = True,
    ) -> None:
        if size < 1:
            raise SandboxError("SandboxPool size must be at least 1")
        self.identities = Identities(uid_base, uid_count or 4 * size)
        self._seccomp = seccomp
        self.size = size
        self.caps = caps
        self.language_hardening = language_hardening
        self._want_bwrap = bwrap
        self._bwrap: str | None = None
        self._cond = threading.Condition()
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Child] = []
        self._spent: list[Child] = []  # served their one run; the refiller has them killed
        self._forking = 0
        self._busy = 0
        self._started = False
        self._closed = False
        self._zygote: Zygote | None = None
        self._zygote_lock = threading.Lock()
        self._refillers: list[threading.Thread] = []
        self._stats = _Stats()

    # ------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SandboxPool:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the zygote and fork `size` children; returns once the pool is warm."""
        with self._cond:
            if self._closed:
                raise SandboxError("this sandbox pool is closed")
            if self._started:
                return
            self._started = True
        try:
            if os.geteuid() == 0:
                self.identities.claim()
            self._ensure_zygote()
            first = self._fork()
            with self._cond:
                self._idle.append(first)
            self._stats.isolation = self._describe(first)
            self._warn_if_degraded()
            # One refiller per slot: while one waits for its child to isolate itself, the zygote
            # forks the next (back-to-back runs use children up as fast as they are made).
            self._refillers = [
                threading.Thread(target=self._refill, name=f"sandbox-refill-{n}", daemon=True) for n in range(self.size)
            ]
            for thread in self._refillers:
                thread.start()
            with self._cond:
                self._cond.wait_for(lambda: len(self._idle) >= self.size or self._closed, timeout=30)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill every child and the zygote. Runs in progress fail with SandboxError."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle + self._spent, []
            self._spent = []
            self._cond.notify_all()
        for child in idle:
            child.sock.close()
        with self._zygote_lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()
        self.identities.release()  # its workers are gone with the zygote
        for thread in self._refillers:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def health(self) -> dict[str, Any]:
        """Children alive, runs served, children recycled and the isolation level in force."""
        with self._cond:
            idle, busy = len(self._idle), self._busy
        zygote = self._zygote
        return {
            "started": self._started and not self._closed,
            "size": self.size,
            "children_alive": idle + busy,
            "idle": idle,
            "busy": busy,
            "runs_served": self._stats.runs,
            "recycled": self._stats.recycled,
            "failures": self._stats.failures,
            "zygote_alive": bool(zygote and zygote.alive),
            "zygote_restarts": self._stats.zygote_restarts,
            "isolation": self._stats.isolation.get("level", "unknown"),
            "isolation_detail": dict(self._stats.isolation),
            "isolation_warning": self.isolation_warning,
        }

    # ------------------------------------------------------------------------------ children
    def _ensure_zygote(self) -> Zygote:
        with self._zygote_lock:
            if self._closed:
                raise SandboxError("this sandbox pool is closed")
            if self._zygote is not None and self._zygote.alive:
                return self._zygote
            if self._zygote is not None:
                self._stats.zygote_restarts += 1
                log.warning("sandbox zygote died (exit %s); starting a new one", self._zygote.process.poll())
                with contextlib.suppress(OSError):
                    self._zygote.sock.close()
                self._zygote.discard()
            self._zygote = self._start_zygote()
            return self._zygote

    def _start_zygote(self) -> Zygote:
        if self._want_bwrap is not False:
            found = shutil.which("bwrap")
            if found:
                try:
                    zygote = Zygote(found, self.caps, self.identities, seccomp=self._seccomp)
                    self._bwrap = found
                    return zygote
                except (OSError, SandboxError, ValueError) as exc:
                    log.warning("bubblewrap is installed but could not start the sandbox (%s); not using it", exc)
            elif self._want_bwrap:
                log.warning("bubblewrap was requested but `bwrap` is not on PATH")
        self._bwrap = None
        try:
            return Zygote(None, self.caps, self.identities, seccomp=self._seccomp)
        except (OSError, ValueError) as exc:
            raise SandboxError(f"the sandbox could not start: {exc}") from exc

    def _fork(self) -> Child:
        zygote = self._ensure_zygote()
        try:
            return zygote.fork(self.caps)
        except SandboxError:
            if zygote.alive:
                raise
            return self._ensure_zygote().fork(self.caps)

    def _want_fork(self) -> bool:
        """Fewer than `size` spares idle or on their way (call with `_cond` held). With at most
        `size` runs at once, the pool holds at most 2 x `size` live children plus the spent ones."""
        return len(self._idle) + self._forking < self.size

    def _refill(self) -> None:
        """Keep `size` pre-forked children idle, so a run never waits for a fork, and have the
        children that served their run killed, off the callers' time (one thread per slot)."""
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or bool(self._spent) or self._want_fork())
                if self._closed:
                    return
                # a release is one message: done first, it frees a uid and ends a used process at once
                spent = self._spent.pop() if self._spent else None
                if spent is None:
                    self._forking += 1
            if spent is not None:
                self._release(spent)
                continue
            try:
                child = self._fork()
            except SandboxError as exc:
                with self._cond:
                    self._forking -= 1
                    if self._closed:
                        return
                    spent = self._spent.pop() if self._spent else None
                if spent is not None:  # e.g. every uid of the range is held: free one, then retry
                    self._release(spent)
                    continue
                failures += 1
                log.error("could not fork a sandbox child: %s", exc)
                time.sleep(min(0.05 * 2**failures, 5.0))
                continue
            failures = 0
            with self._cond:
                self._forking -= 1
                if self._closed:
                    child.sock.close()
                    return
                self._idle.append(child)
                self._cond.notify_all()

    def _checkout(self) -> Child:
        """A pre-forked child that has never run anything; found dead or talking, it is retired."""
        deadline = time.monotonic() + _CHECKOUT_TIMEOUT
        while True:
            doomed: list[Child] = []
            with self._cond:
                if self._closed:
                    raise SandboxError("this sandbox pool is closed")
                doomed = [c for c in self._idle if _unusable(c)]
                if not doomed and self._idle:
                    chosen = self._idle.pop(0)  # the oldest: its isolation is surely complete
                    self._busy += 1
                    self._cond.notify_all()
                    return chosen
                for child in doomed:
                    self._idle.remove(child)
                    self._busy += 1
                if not doomed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise SandboxError("no sandbox child became available in time")
                    self._cond.wait(timeout=min(remaining, 1.0))
            for child in doomed:
                self._retire(child)

    def _spend(self, child: Child) -> None:
        """A child that finished its run: never used again, reaped by the refiller."""
        with self._cond:
            self._busy -= 1
            if self._closed:
                child.sock.close()
                return
            self._spent.append(child)
            self._cond.notify_all()

    def _reap(self, child: Child) -> Status:
        """Kill a child and collect how it ended. Idempotent: later calls return the first status."""
        if child.status is not None:
            return child.status
        child.status = Status()
        child.sock.close()
        try:
            status = child.zygote.reap(child.pid)
        except SandboxError:
            status = Status()
            self._reap_lost(child)
        child.status = status
        with self._cond:
            self._stats.recycled += 1
            self._cond.notify_all()
        return status

    def _reap_lost(self, child: Child) -> None:
        """The zygote did not take `child` back: kill it ourselves, start the next zygote now."""
        if not self._bwrap:  # the pid is ours to signal only outside a pid namespace
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(SandboxError):
            self._ensure_zygote()  # its zygote is gone: start the next one now, not at the next fork

    def _release(self, child: Child) -> None:
        """A spent child: killed by its zygote, which reaps it when it is gone; nobody waits."""
        if child.status is not None:
            return
        child.status = Status()
        child.sock.close()
        try:
            child.zygote.release(child.pid)
        except SandboxError:
            self._reap_lost(child)
        with self._cond:
            self._stats.recycled += 1
            self._cond.notify_all()

    def _retire(self, child: Child) -> Status:
        """Reap a checked-out child now (a failed run); the refiller forks its replacement."""
        if child.status is not None:
            return child.status
        status = self._reap(child)
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()
        return status

    @property
    def isolation_level(self) -> str:
        """What holds stored code, computed once at start: ``bwrap+chroot+seccomp`` or
        ``chroot+seccomp`` as root (a uid per worker, read-only empty root), ``bwrap+seccomp`` not root
        with user namespaces, ``seccomp`` not root without bubblewrap, ``rlimits-only`` without
        seccomp; ``unknown`` before start. Not root, the isolation details say whether each worker
        also has a user, pid and IPC namespace of its own (``pid_per_worker``, ``ipc_per_worker``) and
        a mount namespace with a private /tmp (``fs_per_worker``) and a root of its own holding only
        the interpreter's files (``root_per_worker``)."""
        return str(self._stats.isolation.get("level", "unknown"))

    @property
    def isolation_warning(self) -> str | None:
        """Why the isolation in force is weaker than the full one (root), or None when it is full."""
        return self._stats.isolation.get("warning")

    def _describe(self, child: Child) -> dict[str, Any]:
        facts = dict(child.isolation)
        facts["bwrap"] = bool(self._bwrap)
        walls = [name for name in ("bwrap", "chroot", "seccomp") if facts.get(name)]
        facts["level"] = "+".join(walls) or "rlimits-only"
        uid = facts.get("uid")
        facts["uid_per_worker"] = bool(
            facts.get("uid_dropped") and isinstance(uid, int) and uid in self.identities.uids
        )
        if facts["uid_per_worker"]:
            facts["uids"] = list(self.identities.uids)
        facts["pid_per_worker"] = bool(facts.get("pid_per_worker"))
        facts["fs_per_worker"] = bool(facts.get("fs_per_worker"))
        facts["root_per_worker"] = bool(facts.get("root_per_worker"))
        own_root = (
            "; its root is its own, read-only, with only the interpreter's files in it"
            if facts["root_per_worker"]
            else ""
        )
        if facts["pid_per_worker"] and facts["fs_per_worker"]:
            namespaces = (
                ", and each has a user, pid, IPC and mount namespace of its own (another worker's processes "
                "cannot be signalled, reniced or limited: they are not in its pid namespace; its files are in "
                f"a size-limited /tmp of its own that no other worker and no later run sees{own_root})"
            )
        elif facts["pid_per_worker"]:
            namespaces = (
                ", and each has a user, pid and IPC namespace of its own (another worker's processes "
                "cannot be signalled, reniced or limited: they are not in its pid namespace), but the "
                "workers share their writable files"
            )
        elif facts.get("ipc_per_worker"):
            files = " and a size-limited /tmp" if facts["fs_per_worker"] else ""
            namespaces = f" (each has an IPC namespace{files} of its own)"
        else:
            namespaces = ""
        warning = None
        if not facts.get("seccomp"):
            warning = (
                f"seccomp is unavailable ({facts.get('seccomp_error', 'off or unsupported architecture')}); "
                "stored code is contained only by resource limits"
                + (", its own uid and a read-only root" if facts["uid_per_worker"] else " and the in-language checks")
                + (namespaces.replace(", and each", "; each", 1) if facts["pid_per_worker"] else "")
            )
        elif not facts["uid_per_worker"] and facts["bwrap"]:
            warning = (
                "not running as root: workers run in a user namespace (bubblewrap) with a read-only root, "
                "but share one uid, so what keeps one portal's run from another's is the seccomp filter"
                + (namespaces if facts["pid_per_worker"] else " alone" + namespaces)
                + ". Run as root for a uid of its own per worker."
            )
        elif not facts["uid_per_worker"] and facts["root_per_worker"]:
            warning = (
                "not running as root and no bubblewrap: each worker sees only the interpreter's files (no "
                "host data), but workers share one uid, so what keeps one portal's run from another's is the "
                "seccomp filter" + namespaces + ". Run as root for a uid of its own per worker."
            )
        elif not facts["uid_per_worker"]:
            warning = (
                "not running as root and no bubblewrap: stored code can read any file this user can read, "
                "write where it can write, and workers share one uid, so what keeps one portal's run from "
                "another's is the seccomp filter"
                + (namespaces if facts["pid_per_worker"] else " alone" + namespaces)
                + ". Run as root, or install bubblewrap."
            )
        if warning:
            facts["warning"] = warning
        return facts

    def _warn_if_degraded(self) -> None:
        warning = self.isolation_warning
        if warning:
            log.warning("SANDBOX ISOLATION DEGRADED (%s): %s", self.isolation_level, warning)

    # ------------------------------------------------------------------------------ running
    def run(
        self,
        source: str,
        inputs: dict[str, Any],
        *,
        context: dict[str, Any],
        limits: SandboxLimits | None = None,
        on_call: Callable[[str, dict[str, Any]], Any] | None = None,
        on_batch: Callable[[dict[str, Any] | list[Any]], Any] | None = None,
        proxy: RunProxy | None = None,
        filename: str = "<robot>",
    ) -> SandboxResult:
        """Run `source`'s ``run(inputs, ctx)`` in a child and return its outputs.

        Raises StoredCodeError (with a traceback of the stored code's own lines), SourceRejected,
        SandboxLimitExceeded (`.limit` names the limit) or SandboxError. An exception raised by
        `on_call`/`on_batch` other than RestError aborts the run and propagates unchanged;
        a RestError is handed to the stored code as ``ctx.RestError``. `proxy` answers the run's
        requests instead (sandbox/proxy.py); `on_call`/`on_batch` are a shorthand for a plain one.
        """
        if limits is not None and not isinstance(limits, SandboxLimits):
            raise SandboxError("limits must be a SandboxLimits")
        if proxy is None:
            proxy = RunProxy(on_call, on_batch)
        elif on_call is not None or on_batch is not None:
            raise SandboxError("give either proxy or on_call/on_batch, not both")
        effective = (limits or self.caps).clamp(self.caps)
        job = self._job(source, inputs, context, effective, proxy, filename)
        if not self._started:
            self.start()
        with self._slots:
            child = self._checkout()
            try:
                result = self._drive(child, job, effective, proxy)
            except BaseException:
                with self._cond:
                    self._stats.failures += 1
                raise
            with self._cond:
                self._stats.runs += 1
            self._spend(child)
            return result

    def _job(
        self,
        source: object,
        inputs: object,
        context: object,
        limits: SandboxLimits,
        proxy: RunProxy,
        filename: object,
    ) -> bytes:
        if not isinstance(source, str):
            raise SandboxError("source must be a string")
        if not isinstance(filename, str) or not filename:
            raise SandboxError("filename must be a non-empty string")
        if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
            raise SandboxError("inputs must be a dict with str keys")
        if not isinstance(context, dict) or not all(isinstance(k, str) for k in context):
            raise SandboxError("context must be a dict with str keys")
        for key in context:
            if _CREDENTIAL.search(key):
                raise SandboxError(f"context key {key!r} looks like a credential; stored code never gets those")
            if not key.isidentifier() or key.startswith("_") or key in RESERVED_CONTEXT_KEYS:
                raise SandboxError(f"context key {key!r} cannot be an attribute of ctx")
        try:
            encoded_inputs = _wire.encode(inputs)
            encoded_context = _wire.encode(context)
            _wire.dumps({"i": encoded_inputs, "c": encoded_context})  # e.g. an int too long for JSON
        except (TypeError, ValueError, RecursionError) as exc:
            raise SandboxError(f"inputs and context must be JSON-able (dates and decimals allowed): {exc}") from None
        job = {
            "t": "job",
            "j": os.urandom(8).hex(),  # every frame of the run must carry it
            "source": source,
            "filename": filename,
            "inputs": encoded_inputs,
            "context": encoded_context,
            "limits": limits.as_dict(),
            "hardening": self.language_hardening,
            **proxy.job_flags(),
        }
        return _wire.dumps(job)

    def _drive(
        self,
        child: Child,
        job: bytes,
        limits: SandboxLimits,
        proxy: RunProxy,
    ) -> SandboxResult:
        """Converse with `child` until the run ends. Whatever the child sends, the outcome is a
        result or a SandboxError with the child retired; only the proxy's handlers' own
        exceptions propagate as they are."""
        try:
            return self._converse(child, job, limits, proxy)
        except HostRaised as raised:
            self._retire(child)
            raise raised.original from None
        except SandboxError:
            self._retire(child)
            raise
        except Exception as exc:  # a hostile child must not reach the caller as anything else
            self._retire(child)
            log.warning("sandbox child %s sent an answer that could not be handled: %r", child.pid, exc)
            raise SandboxError(f"the sandbox child sent an invalid answer ({type(exc).__name__})") from None
        except BaseException:
            self._retire(child)
            raise

    def _converse(
        self,
        child: Child,
        job: bytes,
        limits: SandboxLimits,
        proxy: RunProxy,
    ) -> SandboxResult:
        started = time.perf_counter()
        deadline = started + limits.wall_seconds + _GRACE_SECONDS
        frame_limit = limits.output_bytes + _LOG_SLACK
        job_id = _wire.loads(job)["j"]
        calls = 0
        proxy.allowance, proxy.spent = limits.proxied_seconds, 0.0
        proxy.deadline = started + limits.wall_seconds
        try:
            _wire.send_raw(child.sock, job)
        except OSError:
            raise self._died(child, limits) from None
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise limit_error("timeout", limits)
            child.sock.settimeout(remaining)
            try:
                message = _wire.recv(child.sock, frame_limit)
                kind = check_frame(message, job_id)
            except TimeoutError:
                raise limit_error("timeout", limits) from None
            except _wire.FrameTooLarge as exc:
                raise limit_error("output", limits, exc.size) from None
            except (_wire.PeerClosed, OSError):
                raise self._died(child, limits) from None
            except _wire.WireError as exc:
                log.warning("sandbox child %s broke the protocol: %s", child.pid, exc.reason)
                raise SandboxError(f"the sandbox child broke the protocol: {exc.reason}") from None
            if kind in REQUEST_KINDS:
                calls += 1
                if calls > limits.max_calls:
                    raise limit_error("calls", limits)
                reply = proxy.serve(message)
                if proxy.spent >= limits.proxied_seconds:
                    raise limit_error("proxied_time", limits)
                if time.perf_counter() >= proxy.deadline:  # the call used up the run's wall time
                    raise limit_error("timeout", limits)
                try:
                    _wire.send(child.sock, reply)
                except OSError:
                    raise self._died(child, limits) from None
                continue
            if kind == "result":
                outputs, lines = result_of(message, limits)
                return SandboxResult(
                    outputs=outputs,
                    log=lines,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    calls=calls,
                    proxied_seconds=proxy.spent,
                )
            raise error_of(message, limits)

    def _died(self, child: Child, limits: SandboxLimits) -> SandboxError:
        return death_error(self._retire(child), limits)


def _unusable(child: Child) -> bool:
    """True when an idle child's socket shows EOF, an error or any data: it died while waiting,
    or it sent a frame nobody asked for (a forged answer queued for the next job)."""
    try:
        child.sock.settimeout(0.0)  # _drive sets its own timeout before every read
        child.sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True
