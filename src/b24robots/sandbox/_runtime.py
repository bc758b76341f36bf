"""The child side: the stored-code runtime and the worker that runs one job.

Stdlib only. The pool starts the zygote (`_zygote`) as ``python -I -S`` with an empty environment;
it imports this module, i.e. everything stored code may use, then forks workers on request.
A worker isolates itself once, right after the fork (`_isolation`: new session; when root, chroot
into a private empty read-only directory and drop to a uid/gid of its own from the pool's reserved
range; not root, a user, IPC and pid namespace of its own where the kernel allows, the pid one
through one more fork; hard rlimits; seccomp), then serves one job over its own socket and exits.
The run's limits are lowered soft limits and interval timers. The worker's frames go through the C
codec in `_wire`, never the `json` classes stored code can reach."""

from __future__ import annotations

import builtins
import collections
import collections.abc
import contextlib
import datetime
import decimal
import errno
import functools
import itertools
import json
import linecache
import math
import operator
import os
import random
import re
import resource
import signal
import socket
import statistics
import string
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

from b24robots.sandbox import _calls, _isolation, _policy, _wire

MIB = 1024 * 1024
RECURSION_DEPTH = 800
LOG_ENTRIES = _wire.LOG_ENTRIES
LOG_CHARS = _wire.LOG_CHARS
LOG_BYTES = _wire.LOG_CHARS_TOTAL
CONTEXT_FIELDS = ("document_id", "document_type", "portal", "workflow_id", "robot")

# Loaded now so that workers, chrooted into an empty directory, never need the filesystem.
PRELOAD = (
    "_strptime",
    "heapq",  # collections.Counter.most_common(n)
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.utf_8_sig",
    "encodings.utf_16",
    "encodings.utf_32",
    "encodings.cp1251",
    "encodings.cp1252",
    "encodings.cp866",
    "encodings.koi8_r",
    "encodings.idna",
)
# The allowed modules are imported above for the same reason; naming them keeps linters quiet.
_PRELOADED = (collections, collections.abc, datetime, decimal, functools, itertools, json, math, operator)
_PRELOADED_TOO = (random, re, statistics, string, time)


class _LimitHit(BaseException):
    """Raised from a signal handler when a per-run timer fires; BaseException so `except
    Exception` in stored code does not swallow it."""

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


class _Rejected(Exception):
    def __init__(self, problems: list[_policy.SourceProblem]) -> None:
        super().__init__("rejected")
        self.problems = problems


class _BadReturn(Exception):
    pass


_armed = False


def _on_timer(limit: str) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        if _armed:
            raise _LimitHit(limit)

    return handler


# --------------------------------------------------------------------------- stored-code runtime


class RestError(Exception):
    """A proxied REST call failed; `code` and `description` come from Bitrix24."""

    def __init__(self, code: str, description: str = "") -> None:
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description


class Context:
    """What `run(inputs, ctx)` receives as `ctx`. Read-only."""

    __slots__ = ("_fields",)
    RestError = RestError

    def __init__(self, fields: dict[str, Any]) -> None:
        # A read-only view: `ctx._fields` is reachable by name, so it must not be a dict.
        object.__setattr__(self, "_fields", types.MappingProxyType(dict(fields)))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"ctx has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ctx is read-only")

    def __repr__(self) -> str:
        return f"<ctx portal={self._fields.get('portal')!r} robot={self._fields.get('robot')!r}>"


def _checked_name(name: object) -> str:
    name = _policy.exact_str(name)
    reason = _policy.attribute_refusal(name)
    if reason is None and name in _policy.FORMAT_METHODS:
        reason = f"attribute {name!r} cannot be looked up by name in stored code"
    if reason:
        raise AttributeError(reason)
    return name


def _safe_getattr(obj: object, name: str, *default: object) -> object:
    return getattr(obj, _checked_name(name), *default)


def _safe_hasattr(obj: object, name: str) -> bool:
    return hasattr(obj, _checked_name(name))


def _safe_setattr(obj: object, name: str, value: object) -> None:
    setattr(obj, _checked_name(name), value)


def _safe_delattr(obj: object, name: str) -> None:
    delattr(obj, _checked_name(name))


_SAFE_BUILTINS = frozenset(
    [
        "abs",
        "all",
        "any",
        "ascii",
        "bin",
        "bool",
        "bytearray",
        "bytes",
        "callable",
        "chr",
        "classmethod",
        "complex",
        "dict",
        "dir",
        "divmod",
        "enumerate",
        "filter",
        "float",
        "format",
        "frozenset",
        "hash",
        "hex",
        "id",
        "int",
        "isinstance",
        "issubclass",
        "iter",
        "len",
        "list",
        "map",
        "max",
        "min",
        "next",
        "object",
        "oct",
        "ord",
        "pow",
        "property",
        "range",
        "repr",
        "reversed",
        "round",
        "set",
        "slice",
        "sorted",
        "staticmethod",
        "str",
        "sum",
        "super",
        "tuple",
        "type",
        "zip",
        "NotImplemented",
        "Ellipsis",
        "__build_class__",
    ]
)


def _exception_names() -> list[str]:
    return [
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
    ]


_EXCEPTIONS = _exception_names()


class _Modules:
    """Per-run copies of allowed modules: public, non-module attributes only, so stored code can
    neither reach `sys`/`os` through them nor leave state behind for the next run."""

    def __init__(self) -> None:
        self._cache: dict[str, types.ModuleType] = {}

    def get(self, name: str) -> types.ModuleType:
        proxy = self._cache.get(name)
        if proxy is not None:
            return proxy
        real = sys.modules[name]
        proxy = types.ModuleType(name, getattr(real, "__doc__", None))
        withheld = _policy.WITHHELD.get(name, frozenset())
        for key, value in list(vars(real).items()):
            if key.startswith("_") or key in withheld:
                continue
            if isinstance(value, types.ModuleType):
                if f"{name}.{key}" in _policy.ALLOWED_MODULES:
                    setattr(proxy, key, self.get(f"{name}.{key}"))
                continue
            setattr(proxy, key, value)
        self._cache[name] = proxy
        return proxy

    def importer(
        self,
        name: str,
        globals: object = None,
        locals: object = None,
        fromlist: object = (),
        level: int = 0,
    ) -> types.ModuleType:
        name = _policy.exact_str(name)
        if type(level) is not int:
            raise ImportError("relative imports are not allowed in stored code")
        if isinstance(fromlist, (list, tuple)):
            for item in fromlist:
                reason = _policy.attribute_refusal(_policy.exact_str(item))
                if reason:
                    raise ImportError(reason)
        reason = _policy.import_refusal(name, level)
        if reason:
            if isinstance(fromlist, list) and not fromlist and name in sys.modules:
                # PyImport_Import (C code such as datetime.strptime loading _strptime) calls
                # __import__ this way and then takes the module from sys.modules itself; the
                # caller gets an empty stand-in, never the real module.
                return types.ModuleType(name)
            raise ImportError(reason)
        return self.get(name if fromlist else name.partition(".")[0])


def _builtins_for(print_fn: Callable[..., None], modules: _Modules) -> dict[str, Any]:
    table = {name: getattr(builtins, name) for name in (*_SAFE_BUILTINS, *_EXCEPTIONS)}
    table.update(
        getattr=_safe_getattr,
        hasattr=_safe_hasattr,
        setattr=_safe_setattr,
        delattr=_safe_delattr,
        print=print_fn,
        __import__=modules.importer,
    )
    return table


def _filtered(te: traceback.TracebackException, filename: str, seen: set[int]) -> None:
    """Keep only the stored code's own frames, through the whole exception chain."""
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename == filename])
    for other in (te.__cause__, te.__context__):
        if other is not None:
            _filtered(other, filename, seen)


def format_exception(exc: BaseException, filename: str) -> str:
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    _filtered(te, filename, set())
    return "".join(te.format())


# --------------------------------------------------------------------------- the worker

#: The robot `_Worker.warm_up` runs: allowed imports, a dict, a Decimal, a str method, a ctx field.
_WARM_UP = """
import json, decimal, datetime
def run(inputs, ctx):
    total = decimal.Decimal(inputs["d"]) + inputs["a"]
    return {"x": str(total), "p": ctx.portal.upper(), "j": json.dumps([1, "a"]), "y": datetime.date(2026, 1, 1)}
"""


class _Worker:
    def __init__(self, sock: socket.socket, caps: dict[str, Any]) -> None:
        self.sock = sock
        self.caps = caps
        self.base_depth = 0
        # Freed on MemoryError so that the report itself has room to be built.
        self.reserve: bytearray | None = bytearray(MIB)

    # -- per run ----------------------------------------------------------------------------
    def apply_limits(self, limits: dict[str, Any]) -> None:
        def lower(which: int, value: int) -> None:
            # Hard = soft: the process serves this one run, and code must not raise its soft limit.
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))

        lower(resource.RLIMIT_AS, int(limits["memory_mb"]) * MIB)
        lower(resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) * MIB)
        lower(resource.RLIMIT_NOFILE, int(limits["open_files"]))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        # The interval timer reports "cpu" precisely; the rlimit (whole seconds, SIGXCPU kills)
        # ends code stuck inside C, where the timer's handler cannot run.
        used = usage.ru_utime + usage.ru_stime
        lower(resource.RLIMIT_CPU, math.ceil(used + float(limits["cpu_seconds"]) + 0.5))

    @staticmethod
    def compiled(source: str, filename: str, hardening: bool) -> Any:
        if hardening:
            problems = _policy.check_source(source, filename)
            if problems:
                raise _Rejected(problems)
        code = compile(source, filename, "exec", dont_inherit=True)
        lines = source.splitlines(keepends=True)
        linecache.cache[filename] = (len(source), None, lines, filename)
        return code

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        global _armed
        limits = job["limits"]
        filename = str(job["filename"])
        hardening = bool(job["hardening"])
        job_id = job.get("j")
        log: list[str] = []
        log_size = [0]

        def add_log(message: object) -> None:
            text = str(message)[:LOG_CHARS]
            if len(log) >= LOG_ENTRIES or log_size[0] + len(text) > LOG_BYTES:
                if not log or log[-1] != _wire.LOG_TRUNCATED:
                    log.append(_wire.LOG_TRUNCATED)
                return
            log_size[0] += len(text)
            log.append(text)

        def print_to_log(*args: object, sep: str | None = " ", end: str | None = None, **_: object) -> None:
            add_log((" " if sep is None else str(sep)).join(str(a) for a in args))

        def proxied(kind: str, payload: dict[str, Any]) -> Any:
            global _armed
            try:
                encoded = _wire.encode(payload)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"ctx.{kind} arguments cannot be sent: {exc}") from None
            # The wall clock keeps running while the parent serves the call; the alarm is only held
            # back until the frame is complete, so that a timeout never cuts one in half.
            _armed = False
            try:
                _wire.send(self.sock, {"t": kind, "j": job_id, **encoded})
                reply = _wire.recv(self.sock)
            finally:
                _armed = True
            if signal.getitimer(signal.ITIMER_REAL)[0] == 0:
                raise _LimitHit("timeout")
            if reply.get("ok"):
                return _wire.decode(reply.get("result"))
            if reply.get("conn"):
                status = reply.get("status")
                raise _calls.ConnectionError(
                    str(reply.get("code", "ERROR")),
                    str(reply.get("description", "")),
                    status if type(status) is int else None,
                )
            raise RestError(str(reply.get("code", "ERROR")), str(reply.get("description", "")))

        def call(method: str, params: dict[str, Any] | None = None) -> Any:
            if not job["can_call"]:
                raise RuntimeError("ctx.call is not available: this run was started without REST access")
            if not isinstance(method, str) or not method:
                raise TypeError("ctx.call(method, params): method must be a non-empty string")
            if params is not None and not isinstance(params, (dict, list)):
                raise TypeError("ctx.call(method, params): params must be a dict")
            return proxied("call", {"method": method, "params": params or {}})

        def call_as_caller(method: str, params: dict[str, Any] | None = None) -> Any:
            # the same call as the robot's run-as user (the token the portal sent with this call)
            if not job.get("can_call_as_caller"):
                raise RuntimeError(
                    "ctx.call_as_caller is not available: this call brought no run-as user's token, or it"
                    " expired before this attempt (it is valid for an hour after the portal's call); use ctx.call"
                )
            if not isinstance(method, str) or not method:
                raise TypeError("ctx.call_as_caller(method, params): method must be a non-empty string")
            if params is not None and not isinstance(params, (dict, list)):
                raise TypeError("ctx.call_as_caller(method, params): params must be a dict")
            return proxied("call", {"method": method, "params": params or {}, "as_caller": True})

        def batch(commands: dict[str, Any] | list[Any]) -> Any:
            if not job["can_batch"]:
                raise RuntimeError("ctx.batch is not available: this run was started without REST access")
            if not isinstance(commands, (dict, list)):
                raise TypeError("ctx.batch(commands): commands must be a dict or a list")
            return proxied("batch", {"commands": commands})

        def connection(kind: str) -> Callable[[str], Any]:
            def open_connection(name: str) -> Any:
                if not job.get("can_connect"):
                    raise RuntimeError("connections are not available: this run was started without them")
                if not isinstance(name, str) or not name:
                    raise TypeError(f"ctx.{'onec' if kind == '1c' else kind}(name): name must be a non-empty string")
                return _calls.KINDS[kind](lambda payload: proxied("conn", payload), kind, name)

            return open_connection

        def fire_trigger(code: str, entity: str | None = None) -> Any:
            # journaled by the parent (jobs/runner.py), like every fire; returns the journal entry id
            if not isinstance(code, str) or not code:
                raise TypeError("ctx.fire_trigger(code, entity=None): code must be a non-empty string")
            if entity is not None and not isinstance(entity, str):
                raise TypeError("ctx.fire_trigger: entity must be a document id such as 'DEAL_42'")
            params: dict[str, Any] = {"CODE": code}
            if entity is not None:
                params["ENTITY"] = entity
            return call("crm.automation.trigger.execute", params)

        def start_workflow(
            template_id: int, entity: str | None = None, parameters: dict[str, Any] | None = None
        ) -> Any:
            if isinstance(template_id, bool) or not isinstance(template_id, int):
                raise TypeError(
                    "ctx.start_workflow(template_id, entity=None, parameters=None): template_id is a number"
                )
            if entity is not None and not isinstance(entity, str):
                raise TypeError("ctx.start_workflow: entity must be a document id such as 'DEAL_42'")
            params: dict[str, Any] = {"TEMPLATE_ID": template_id, "PARAMETERS": parameters or {}}
            if entity is not None:
                params["ENTITY"] = entity
            return call("bizproc.workflow.start", params)

        context = _wire.decode(job["context"])
        fields: dict[str, Any] = {name: None for name in CONTEXT_FIELDS}
        fields.update(context)
        fields.update(
            log=add_log,
            call=call,
            call_as_caller=call_as_caller,
            batch=batch,
            fire_trigger=fire_trigger,
            start_workflow=start_workflow,
            RestError=RestError,
            http=connection("http"),
            onec=connection("1c"),
            sql=connection("sql"),
            ConnectionError=_calls.ConnectionError,
        )
        ctx = Context(fields)
        inputs = _wire.decode(job["inputs"])
        modules = _Modules()
        decimal.setcontext(decimal.Context())
        sys.setrecursionlimit(self.base_depth + RECURSION_DEPTH)
        try:
            self.apply_limits(limits)
            signal.setitimer(signal.ITIMER_PROF, float(limits["cpu_seconds"]))
            signal.setitimer(signal.ITIMER_REAL, float(limits["wall_seconds"]))
            _armed = True
            code = self.compiled(str(job["source"]), filename, hardening)
            namespace: dict[str, Any] = {
                "__builtins__": _builtins_for(print_to_log, modules) if hardening else builtins.__dict__,
                "__name__": "robot",
            }
            exec(code, namespace)  # noqa: S102 - running the stored code is the point; it is contained
            entry = namespace.get("run")
            if not callable(entry):
                raise _Rejected([_policy.SourceProblem(1, 0, "no callable run(inputs, ctx) defined", "entry_point")])
            outputs = entry(inputs, ctx)
            _armed = False
            return {
                "t": "result",
                "outputs": self.encode_outputs(outputs, int(limits["output_bytes"])),
                "log": log,
            }
        except BaseException as exc:
            _armed = False
            return self.report(exc, filename, log)
        finally:
            _armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.setitimer(signal.ITIMER_PROF, 0)

    @staticmethod
    def warm_up() -> None:
        """Take a constant robot through the steps of a run (source check, compile, exec, ctx,
        module copies, the codec) without limits, timers or frames: in the zygote, so that every
        first-use initialisation is done once, before the fork, not in each run. (Doing it again in
        each worker before it reports ready took the run's copy-on-write faults off the run, about
        1 ms, but doubled the CPU a worker costs to make: back-to-back runs got slower.)"""
        filename = "<warm-up>"
        code = _Worker.compiled(_WARM_UP, filename, True)
        linecache.cache.pop(filename, None)
        modules = _Modules()
        namespace: dict[str, Any] = {"__builtins__": _builtins_for(print, modules), "__name__": "robot"}
        exec(code, namespace)  # noqa: S102 - our own constant source
        ctx = Context({name: None for name in CONTEXT_FIELDS} | _wire.decode(_wire.encode({"portal": "warm.up"})))
        outputs = namespace["run"](_wire.decode(_wire.encode({"a": 1, "d": decimal.Decimal("1.5")})), ctx)
        _wire.dumps({"t": "result", "outputs": _Worker.encode_outputs(outputs, MIB), "log": []})

    @staticmethod
    def encode_outputs(outputs: object, limit: int) -> Any:
        if not isinstance(outputs, dict):
            raise _BadReturn(f"run() must return a dict of outputs, not {type(outputs).__name__}")
        for key in outputs:
            if not isinstance(key, str):
                raise _BadReturn(f"output names must be str, not {type(key).__name__} ({key!r:.40})")
        try:
            encoded = _wire.encode(outputs)
            size = len(_wire.dumps(encoded))
        except (TypeError, ValueError) as exc:
            raise _BadReturn(f"run() returned a value that is not JSON-able: {exc}") from None
        if size > limit:
            raise _LimitHit("output:" + str(size))
        return encoded

    def report(self, exc: BaseException, filename: str, log: list[str]) -> dict[str, Any]:
        if isinstance(exc, MemoryError):
            self.reserve = None
        base: dict[str, Any] = {"t": "error", "log": log}
        if isinstance(exc, _LimitHit):
            limit, _, detail = exc.limit.partition(":")
            return {**base, "kind": "limit", "limit": limit, "detail": detail}
        if isinstance(exc, RecursionError):
            return {**base, "kind": "limit", "limit": "recursion", "detail": str(exc)}
        if isinstance(exc, MemoryError):
            return {**base, "kind": "limit", "limit": "memory", "detail": ""}
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            return {**base, "kind": "limit", "limit": "file_size", "detail": str(exc)}
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            return {**base, "kind": "limit", "limit": "open_files", "detail": str(exc)}
        if isinstance(exc, _Rejected):
            problems = [[p.line, p.col, p.message, p.kind] for p in exc.problems]
            return {**base, "kind": "rejected", "problems": problems}
        if isinstance(exc, _BadReturn):
            return {**base, "kind": "bad_return", "message": str(exc)}
        try:
            text = format_exception(exc, filename)
            message = f"{type(exc).__name__}: {exc}"
        except BaseException:  # a hostile __str__ must not take the worker down
            text, message = "", type(exc).__name__
        return {**base, "kind": "code", "message": message[:2000], "traceback": text[-20000:]}

    def serve(self) -> None:
        """Run one job, answer, exit: threads the stored code started die with the process."""
        self.base_depth = len(traceback.extract_stack())
        try:
            job = _wire.recv(self.sock)
        except (_wire.WireError, OSError):
            os._exit(0)
        try:
            reply = {**self.run_job(job), "j": job.get("j")}
            payload = _wire.dumps(reply)
        except BaseException as exc:  # last resort: never die silently while the pool waits
            reply = {"t": "error", "kind": "internal", "message": f"{type(exc).__name__}: {exc}"[:500]}
            payload = _wire.dumps({**reply, "j": job.get("j")})
        with contextlib.suppress(OSError):
            _wire.send_raw(self.sock, payload)
        os._exit(0)


def worker_main(
    sock: socket.socket, workdir: str, caps: dict[str, Any], uid: int | None, seccomp: bool, report_fd: int | None
) -> None:
    """The body of a process the zygote forked: namespaces (not root), isolation, one run, exit."""
    try:
        namespaces = None
        if report_fd is not None:
            namespaces = _isolation.own_namespaces(report_fd, workdir, caps["file_size_mb"] * _isolation.MIB)
        timers = {signal.SIGPROF: _on_timer("cpu"), signal.SIGALRM: _on_timer("timeout")}
        facts = _isolation.isolate(sock, workdir, caps, uid, seccomp, namespaces, timers)
    except BaseException as exc:
        _wire.send(sock, {"t": "failed", "message": f"{type(exc).__name__}: {exc}"})
        os._exit(3)
    _wire.send(sock, {"t": "ready", "pid": os.getpid(), "isolation": facts})
    _Worker(sock, caps).serve()


def warm_up() -> None:
    """First-use initialisation of a run's steps, once in the zygote (see `_Worker.warm_up`)."""
    _Worker.warm_up()
