"""What a child's frames mean: the checks the parent makes on them and the errors a run ends in.

The parent trusts nothing a child sends (issue 14): a frame that is malformed, for another job or
with a log bigger than the worker keeps, is a protocol breach; a limit, an error of the code or a
death becomes the SandboxError subclass `SandboxPool.run` raises.
"""

from __future__ import annotations

import signal
from typing import Any

from b24robots.errors import SandboxError, SandboxLimitExceeded, SourceRejected, StoredCodeError
from b24robots.sandbox import _wire
from b24robots.sandbox._policy import SourceProblem
from b24robots.sandbox._spawn import Status
from b24robots.sandbox.limits import SandboxLimits
from b24robots.sandbox.proxy import REQUEST_KINDS, check_request

LIMIT_NAMES = frozenset(
    {"timeout", "cpu", "memory", "output", "file_size", "recursion", "open_files", "calls", "proxied_time"}
)
_KINDS = frozenset({"limit", "code", "rejected", "bad_return", "internal"})
_SIGNALS = {s.value for s in signal.Signals}


def result_of(message: dict[str, Any], limits: SandboxLimits) -> tuple[dict[str, Any], list[str]]:
    """The outputs and log of a checked result frame; SandboxError (a limit, or undecodable outputs) otherwise."""
    raw = message.get("outputs")
    size = len(_wire.dumps({"o": raw})) - 6
    if size > limits.output_bytes:
        raise limit_error("output", limits, size)
    try:
        outputs = _wire.decode(raw)
    except _wire.WireError as exc:
        raise SandboxError(f"the outputs could not be decoded: {exc.reason}") from None
    except RecursionError:
        raise limit_error("recursion", limits) from None
    if not isinstance(outputs, dict):
        raise SandboxError("run() must return a dict of outputs")
    return outputs, list(message["log"])


def death_error(status: Status, limits: SandboxLimits) -> SandboxError:
    """What a child that died during its run (reaped with `status`) means for the run."""
    name = signal.Signals(status.signal).name if status.signal in _SIGNALS else str(status.signal)
    if status.signal == signal.SIGXCPU or status.cpu >= limits.cpu_seconds:
        return limit_error("cpu", limits)
    if status.signal == signal.SIGXFSZ:
        return limit_error("file_size", limits)
    if status.maxrss_kb * 1024 >= 0.8 * limits.memory_mb * 1024 * 1024:
        return limit_error("memory", limits)
    if status.signal == signal.SIGSYS:
        return SandboxError("the stored code made a forbidden system call and was killed")
    if status.signal:
        return SandboxError(f"the sandbox child died unexpectedly (signal {name})")
    return SandboxError(f"the sandbox child exited unexpectedly (status {status.exit})")


def check_frame(message: dict[str, Any], job_id: str) -> str:
    """The kind of a frame from a child running job `job_id`; WireError unless it is well formed."""
    kind = message.get("t")
    if message.get("j") != job_id:
        raise _wire.WireError(f"a {str(kind)[:20]!r} frame for a job it was not given")
    if kind in REQUEST_KINDS:
        check_request(message)
        return str(kind)
    if kind == "result":
        if not isinstance(message.get("outputs"), dict):
            raise _wire.WireError("a result frame without outputs")
    elif kind == "error":
        if message.get("kind") not in _KINDS:
            raise _wire.WireError("an error frame of an unknown kind")
    else:
        raise _wire.WireError(f"an unexpected {str(kind)[:20]!r} frame")
    _check_log(message.get("log", []))
    return str(kind)


def _check_log(value: object) -> None:
    """The log as the worker keeps it (see _wire.LOG_*); anything bigger or stranger is a lie."""
    if not isinstance(value, list) or len(value) > _wire.LOG_ENTRIES + 1:
        raise _wire.WireError("a log that is not a list of at most 1001 lines")
    total = 0
    for index, line in enumerate(value):
        if type(line) is not str or len(line) > _wire.LOG_CHARS:
            raise _wire.WireError("a log line that is not text of at most 4000 characters")
        if index == _wire.LOG_ENTRIES and line != _wire.LOG_TRUNCATED:
            raise _wire.WireError("a log longer than 1000 lines")
        total += len(line)
    if total > _wire.LOG_CHARS_TOTAL + len(_wire.LOG_TRUNCATED):
        raise _wire.WireError("a log longer than 256 KB")


def _lines(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if type(item) is str]


def limit_error(name: str, limits: SandboxLimits, detail: object = None) -> SandboxLimitExceeded:
    messages = {
        "timeout": f"the robot ran longer than {limits.wall_seconds:g} s (wall-clock limit)",
        "cpu": f"the robot used more than {limits.cpu_seconds:g} s of CPU time",
        "memory": f"the robot needed more than {limits.memory_mb} MB of memory",
        "output": f"the outputs exceed {limits.output_bytes} bytes as JSON" + (f" ({detail} bytes)" if detail else ""),
        "recursion": "the robot recursed too deeply (maximum recursion depth exceeded)",
        "file_size": f"the robot wrote a file larger than {limits.file_size_mb} MB",
        "open_files": f"the robot opened more than {limits.open_files} files",
        "calls": f"the robot made more than {limits.max_calls} proxied requests (ctx.call, ctx.batch, connections)",
        "proxied_time": f"the robot spent more than {limits.proxied_seconds:g} s in proxied requests "
        "(ctx.call, ctx.batch, connections) in total",
    }
    return SandboxLimitExceeded(name, f"{messages[name]}; limit {name!r} stopped it")


def error_of(message: dict[str, Any], limits: SandboxLimits) -> SandboxError:
    kind = message.get("kind")
    error: SandboxError
    if kind == "limit" and message.get("limit") in LIMIT_NAMES:
        error = limit_error(str(message["limit"]), limits, message.get("detail") or None)
    elif kind == "code":
        error = StoredCodeError(str(message.get("message", ""))[:2000], str(message.get("traceback", "")))
    elif kind == "rejected":
        problems = [
            SourceProblem(int(p[0]), int(p[1]), str(p[2]), str(p[3]))
            for p in message.get("problems") or []
            if isinstance(p, list) and len(p) == 4
        ]
        text = "; ".join(str(p) for p in problems) or "the code was rejected"
        error = SourceRejected(f"the stored code was refused: {text}", problems)
    elif kind == "bad_return":
        error = SandboxError(str(message.get("message", "run() returned a bad value"))[:2000])
    else:
        error = SandboxError(f"sandbox failure: {str(message.get('message', message.get('t')))[:500]}")
    error.log = tuple(_lines(message.get("log")))
    return error
