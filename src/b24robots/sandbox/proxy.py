"""What a run may ask the parent for, and how the parent answers: the proxy of stored code.

Stored code has no network and no credentials. Everything it reaches outside its process goes
through frames to the parent (`ctx.call`, `ctx.batch`); this module checks each request frame,
performs it through the callables the caller gave and builds the reply frame. The pool only moves
frames; it never decides what a request may do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from b24robots.errors import RestError, SandboxError
from b24robots.sandbox import _wire

CallHandler = Callable[[str, dict[str, Any]], Any]
BatchHandler = Callable[[dict[str, Any] | list[Any]], Any]

#: frame kinds a run sends to ask the parent for something (the others end the run)
REQUEST_KINDS = frozenset({"call", "batch"})


class HostRaised(Exception):
    """A handler raised something other than RestError: the caller's own exception, re-raised by `run`."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


@dataclass
class RunProxy:
    """The parent's side of one run's requests. A missing handler means the run has no such access."""

    on_call: CallHandler | None = None
    on_batch: BatchHandler | None = None

    def job_flags(self) -> dict[str, bool]:
        """What the worker offers stored code (ctx.call / ctx.batch raise when absent)."""
        return {"can_call": self.on_call is not None, "can_batch": self.on_batch is not None}

    def serve(self, message: dict[str, Any]) -> dict[str, Any]:
        """The reply frame to a checked request frame (see `check_request`).

        RestError becomes a refusal the stored code sees as ``ctx.RestError``; SandboxError
        propagates (the run fails); any other exception of a handler is wrapped in HostRaised.
        """
        try:
            return self._serve(message)
        except SandboxError:
            raise
        except BaseException as exc:
            raise HostRaised(exc) from exc

    def _serve(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            if message["t"] == "call":
                method, params = message.get("method"), _wire.decode(message.get("params"))
                if not isinstance(method, str) or not isinstance(params, (dict, list)):
                    return refusal("BAD_REQUEST", "malformed ctx.call")
                if self.on_call is None:
                    return refusal("NOT_AVAILABLE", "no REST access")
                result = self.on_call(method, params)  # type: ignore[arg-type]
            else:
                commands = _wire.decode(message.get("commands"))
                if not isinstance(commands, (dict, list)):
                    return refusal("BAD_REQUEST", "malformed ctx.batch")
                if self.on_batch is None:
                    return refusal("NOT_AVAILABLE", "no REST access")
                result = self.on_batch(commands)
        except RestError as exc:
            return refusal(exc.code, exc.description)
        except _wire.WireError as exc:
            return refusal("BAD_REQUEST", exc.reason)
        except RecursionError:
            return refusal("BAD_REQUEST", "arguments nested too deeply")
        return answer(result)


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
