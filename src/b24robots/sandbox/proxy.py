"""What a run may ask the parent for, and how the parent answers: the proxy of stored code.

Stored code has no network and no credentials. Everything it reaches outside its process goes
through frames to the parent (`ctx.call`, `ctx.batch`, `ctx.http/onec/sql`); this module checks
each request frame, decides whether the run may make it (the capability list of REST methods,
the robot's declared connections are checked by the connection scope the caller hands in),
performs it through the callables the caller gave and builds the reply frame. The pool only moves
frames; it never decides what a request may do.
"""

from __future__ import annotations

import binascii
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from b24robots.errors import ConfigError, ConnectionCallError, RestError, SandboxError
from b24robots.sandbox import _wire

CallHandler = Callable[[str, dict[str, Any]], Any]
BatchHandler = Callable[[dict[str, Any] | list[Any]], Any]
#: (kind, connection name, operation, positional args, keyword args) -> the operation's result
ConnectionHandler = Callable[[str, str, str, list[Any], dict[str, Any]], Any]

#: frame kinds a run sends to ask the parent for something (the others end the run)
REQUEST_KINDS = frozenset({"call", "batch", "conn"})

# ------------------------------------------------------------------------------ REST capabilities
SETTING = "B24R_SANDBOX_METHODS"
#: What stored code may call by default: the CRM, tasks, reading users, lists, reading Disk and
#: running workflows / answering their tasks. `!` excludes. Registration and settings of the
#: application (trigger registration included) are the server's job, never a run's.
DEFAULT_METHODS: tuple[str, ...] = (
    "crm.*",
    "!crm.automation.trigger.add",
    "!crm.automation.trigger.delete",
    "tasks.*",
    "task.*",
    "user.get",
    "user.search",
    "user.current",
    "user.fields",
    "lists.*",
    "disk.*.get*",
    "disk.*.list*",
    "bizproc.workflow.*",
    "!bizproc.workflow.template.add",
    "!bizproc.workflow.template.update",
    "!bizproc.workflow.template.delete",
    "bizproc.task.*",
)
#: Never callable from stored code, whatever the setting says: rebinding the app's events or
#: placements, (un)registering robots and activities, the app's own settings, OAuth, and `batch`
#: as a method (ctx.batch checks each command instead).
NEVER: tuple[str, ...] = (
    "event.*",
    "placement.*",
    "userfieldtype.*",
    "bizproc.robot.*",
    "bizproc.activity.*",
    "app.*",
    "oauth.*",
    "batch",
    "crm.automation.trigger.add",
    "crm.automation.trigger.delete",
)
PATTERN = re.compile(r"^!?[a-z0-9_*]+(\.[a-z0-9_*]+)*$")


def parse_patterns(value: str | Iterable[str], where: str) -> tuple[str, ...]:
    """Patterns from a comma-separated text or a list (`default` stands for DEFAULT_METHODS).

    ConfigError naming `where` and the bad item. Method names are case-insensitive on the portal
    (rest/classes/general/rest.php lower-cases the method before it looks it up), so are patterns.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        item = str(raw).strip().lower()
        if not item:
            continue
        if item == "default":
            out.extend(DEFAULT_METHODS)
        elif PATTERN.match(item):
            out.append(item)
        else:
            raise ConfigError(
                f"{where}: {raw!r} is not a method pattern such as crm.deal.*, tasks.task.get or !crm.deal.delete"
            )
    return tuple(out)


def _matches(method: str, patterns: Sequence[str]) -> bool:
    """Allowed by `patterns`: some plain pattern matches and no `!` pattern does."""
    included = any(fnmatchcase(method, p) for p in patterns if not p.startswith("!"))
    return included and not any(fnmatchcase(method, p[1:]) for p in patterns if p.startswith("!"))


@dataclass(frozen=True)
class MethodPolicy:
    """Which REST methods a run's `ctx.call`/`ctx.batch` may reach: the server's list, narrowed by the robot's."""

    allowed: tuple[str, ...] = DEFAULT_METHODS
    robot: str = ""
    narrowed: tuple[str, ...] = ()  # the robot's own `methods`; empty = no narrowing

    def refusal(self, method: str) -> str | None:
        """Why `method` is refused (naming the rule or setting to change), or None when it is allowed."""
        name = method.strip().lower()
        if any(fnmatchcase(name, p) for p in NEVER):
            return f"{method} is never available to stored code"
        if not _matches(name, self.allowed):
            return f"{method} is not in the methods stored code may call ({SETTING})"
        if self.narrowed and not _matches(name, self.narrowed):
            return f"{method} is not in the methods robot {self.robot!r} declares (its document's `methods`)"
        return None

    def batch_refusal(self, commands: dict[str, Any] | list[Any]) -> str | None:
        """The first batched command that is refused (each is checked; a batch is never a way around)."""
        pairs = commands.items() if isinstance(commands, dict) else enumerate(commands)
        for key, command in pairs:
            if isinstance(command, str):
                method = command.split("?", 1)[0]
            elif isinstance(command, list | tuple) and command and isinstance(command[0], str):
                method = command[0]
            else:
                return f"batch command {key!r} is not a (method, params) pair"
            why = self.refusal(method)
            if why:
                return f"batch command {key!r}: {why}"
        return None


class HostRaised(Exception):
    """A handler raised something other than RestError: the caller's own exception, re-raised by `run`."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


@dataclass
class RunProxy:
    """The parent's side of one run's requests. A missing handler means the run has no such access.

    `methods` (when set) decides which REST methods `ctx.call`/`ctx.batch` reach; a refused request
    never reaches a handler, is answered as ``ctx.RestError`` (code METHOD_NOT_ALLOWED) and is noted
    in `notes`, which the caller adds to the run's log. `on_connection` performs `ctx.http/onec/sql`
    calls; its ConnectionCallError reaches stored code as ``ctx.ConnectionError``.

    `spent` adds up the seconds spent in `serve`; the pool sets `allowance` (the run's
    `proxied_seconds`) and `deadline` (the end of its wall limit, a time.perf_counter() value) and
    stops the run once either is used up. `time_left` is what a call being served may still take:
    connection calls use it as their timeout (see ConnectionHub.scope), the runner's REST handlers
    cut `ctx.call`/`ctx.batch`/`ctx.call_as_caller` to it (jobs/runner.py).
    """

    on_call: CallHandler | None = None
    on_batch: BatchHandler | None = None
    on_call_as_caller: CallHandler | None = None  # ctx.call_as_caller: the run-as user's token
    on_connection: ConnectionHandler | None = None
    methods: MethodPolicy | None = None
    notes: list[str] = field(default_factory=list)
    allowance: float | None = None
    deadline: float | None = None
    spent: float = 0.0
    _serving_since: float | None = field(default=None, repr=False)

    def time_left(self) -> float:
        """Seconds the call being served may still take: the least of the run's proxied time left
        (that call counted so far) and its wall time left."""
        now = time.perf_counter()
        left = math.inf
        if self.allowance is not None:
            since = self._serving_since
            left = self.allowance - self.spent - (now - since if since is not None else 0.0)
        if self.deadline is not None:
            left = min(left, self.deadline - now)
        return left

    def job_flags(self) -> dict[str, bool]:
        """What the worker offers stored code (ctx.call / ctx.batch / ctx.http... raise when absent)."""
        return {
            "can_call": self.on_call is not None,
            "can_call_as_caller": self.on_call_as_caller is not None,
            "can_batch": self.on_batch is not None,
            "can_connect": self.on_connection is not None,
        }

    def _refuse(self, why: str) -> dict[str, Any]:
        if len(self.notes) < 20:  # a loop of refused calls must not flood the log
            self.notes.append(f"b24robots: refused: {why}")
        return refusal("METHOD_NOT_ALLOWED", why)

    def serve(self, message: dict[str, Any]) -> dict[str, Any]:
        """The reply frame to a checked request frame (see `check_request`).

        RestError becomes a refusal the stored code sees as ``ctx.RestError``; SandboxError
        propagates (the run fails); any other exception of a handler is wrapped in HostRaised.
        """
        self._serving_since = started = time.perf_counter()
        try:
            return self._serve(message)
        except SandboxError:
            raise
        except BaseException as exc:
            raise HostRaised(exc) from exc
        finally:
            self._serving_since = None
            self.spent += time.perf_counter() - started

    def _serve(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            if message["t"] == "conn":
                return self._connection(message)
            if message["t"] == "call":
                method, params = message.get("method"), _wire.decode(message.get("params"))
                if not isinstance(method, str) or not isinstance(params, (dict, list)):
                    return refusal("BAD_REQUEST", "malformed ctx.call")
                handler = self.on_call_as_caller if message.get("as_caller") is True else self.on_call
                if handler is None:
                    return refusal("NOT_AVAILABLE", "no REST access")
                # the capability list applies whoever's token the call carries
                why = self.methods.refusal(method) if self.methods else None
                if why:
                    return self._refuse(why)
                result = handler(method, params)  # type: ignore[arg-type]
            else:
                commands = _wire.decode(message.get("commands"))
                if not isinstance(commands, (dict, list)):
                    return refusal("BAD_REQUEST", "malformed ctx.batch")
                if self.on_batch is None:
                    return refusal("NOT_AVAILABLE", "no REST access")
                why = self.methods.batch_refusal(commands) if self.methods else None
                if why:
                    return self._refuse(why)
                result = self.on_batch(commands)
        except RestError as exc:
            return refusal(exc.code, exc.description)
        except _wire.WireError as exc:
            return refusal("BAD_REQUEST", exc.reason)
        except RecursionError:
            return refusal("BAD_REQUEST", "arguments nested too deeply")
        return answer(result)

    def _connection(self, message: dict[str, Any]) -> dict[str, Any]:
        kind, name, op = message["kind"], message["name"], message["op"]
        args, kwargs = _wire.decode(message.get("args")), _wire.decode(message.get("kwargs"))
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            return refusal("BAD", "malformed connection call", conn=True)
        if self.on_connection is None:
            return refusal("NOT_AVAILABLE", "connections are not available in this run", conn=True)
        try:
            result = self.on_connection(kind, name, op, args, kwargs)
        except ConnectionCallError as exc:
            return refusal(exc.code, str(exc), conn=True, status=exc.status)
        except (TypeError, ValueError) as exc:  # e.g. a filter of the wrong type: the code's mistake
            return refusal("BAD", f"connection {name!r}: {exc}", conn=True)
        if kind == "http":
            result = _http_response(result)
        return answer(result)


def _http_response(response: Any) -> dict[str, Any]:
    """An HTTP answer as stored code receives it (sandbox/_calls.py rebuilds the Response)."""
    return {
        "status": int(response.status),
        "headers": {str(k): str(v) for k, v in dict(response.headers).items()},
        "content": binascii.b2a_base64(bytes(response.content), newline=False).decode("ascii"),
    }


def refusal(code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"t": "reply", "ok": False, "code": code, "description": description, **extra}


def answer(result: Any) -> dict[str, Any]:
    try:
        return {"t": "reply", "ok": True, "result": _wire.encode(result)}
    except (TypeError, ValueError) as exc:
        raise SandboxError(f"a REST handler returned a value stored code cannot receive: {exc}") from None


def check_request(message: dict[str, Any]) -> None:
    """WireError unless a request frame (of a kind in REQUEST_KINDS) is well formed."""
    kind = message.get("t")
    if kind == "call":
        method = message.get("method")
        if not isinstance(method, str) or not 0 < len(method) <= 200 or "params" not in message:
            raise _wire.WireError("a malformed call frame")
    elif kind == "batch" and "commands" not in message:
        raise _wire.WireError("a malformed batch frame")
    elif kind == "conn":
        name, op = message.get("name"), message.get("op")
        if (
            message.get("kind") not in CONNECTION_OPS
            or not isinstance(name, str)
            or not 0 < len(name) <= 64
            or op not in CONNECTION_OPS[message["kind"]]
            or "args" not in message
            or "kwargs" not in message
        ):
            raise _wire.WireError("a malformed connection frame")


#: what stored code may do with a connection of each kind (robots/context.py's HttpCalls, ...)
CONNECTION_OPS: Mapping[str, frozenset[str]] = {
    "http": frozenset({"request"}),
    "1c": frozenset({"list", "first", "get", "create", "update", "delete", "post_document", "unpost_document"}),
    "sql": frozenset({"query", "first", "execute"}),
}
