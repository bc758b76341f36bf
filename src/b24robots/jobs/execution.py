"""One execution of a robot's code and what it came to, decided in one place.

The runner (a call from a portal) and the test run (the editor's Test button, `b24robots robots
test`) both execute through `execute` and read its `Execution`; each then says what the verdict means
for it: the runner turns it into an answer, a retry or a dead letter under the retry rules; the test
run into a message for the admin. Nothing here retries, logs or touches the journal.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from b24robots.connections.hub import RunConnections
from b24robots.errors import (
    B24RobotsError,
    ConnectionCallError,
    ConnectionNotAvailable,
    InputError,
    OriginRefused,
    RemoteError,
    ResponseTooLarge,
    SandboxLimitExceeded,
    StoredCodeError,
)
from b24robots.robots.context import RobotContext
from b24robots.robots.params import dump_values
from b24robots.robots.signals import Retry, RobotFailure


class Verdict(StrEnum):
    """What one execution came to."""

    OK = "ok"  # the code returned outputs that fit the declaration
    FAILURE = "failure"  # the code reported a business failure (RobotFailure), with partial outputs
    RETRY = "retry"  # the code asked to run again later (Retry)
    BAD_OUTPUTS = "bad_outputs"  # the outputs do not fit the declaration
    LIMIT = "limit"  # a sandbox limit stopped the code
    CONNECTION = "connection"  # a connection call failed (see `permanent`)
    ERROR = "error"  # the code raised, or the server could not run it


@dataclass
class Execution:
    """The verdict with what each reader needs: outputs (dumped; partial for a failure), the message,
    the traceback of the code's own lines, a retry's delay, the exception raised and, for CONNECTION,
    the connection error behind it and whether it fails the same way on every attempt."""

    verdict: Verdict
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    traceback: str = ""
    delay: float = 0.0
    error: BaseException | None = None
    connection: ConnectionCallError | None = None
    permanent: bool = False


def permanent_connection_error(exc: ConnectionCallError) -> bool:
    """A connection failure that fails the same way on every attempt (not a 5xx or a missing answer)."""
    permanent = isinstance(exc, ConnectionNotAvailable | OriginRefused | ResponseTooLarge) or (
        isinstance(exc, RemoteError) and exc.status is not None and exc.status < 500
    )
    return permanent or exc.code in ("BAD", "SQL")


def _connection_cause(ctx: RobotContext, exc: StoredCodeError) -> ConnectionCallError | None:
    """The connection error stored code let escape, when that is what ended the run."""
    scope = ctx.connections
    last = scope.last_error if isinstance(scope, RunConnections) else None
    return last if last is not None and last.reason in str(exc) else None


def _partial(params: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(dump_values(params, values))
    except InputError:
        return {}


def _connection(raised: BaseException, cause: ConnectionCallError, tb: str = "") -> Execution:
    return Execution(
        Verdict.CONNECTION,
        message=str(cause),
        traceback=tb,
        error=raised,
        connection=cause,
        permanent=permanent_connection_error(cause),
    )


async def execute(call: Callable[[], Awaitable[Mapping[str, Any]]], outputs: Any, ctx: RobotContext) -> Execution:
    """Await `call()` (the robot's code once, e.g. `Runner.call`), dump its outputs by the `outputs`
    declaration and classify whatever it raised. Robot code is user code: any exception is a verdict,
    never raised from here."""
    try:
        raw = await call()
        return Execution(Verdict.OK, outputs=dict(dump_values(outputs, raw)))
    except ConnectionCallError as exc:
        return _connection(exc, exc)
    except StoredCodeError as exc:
        cause = _connection_cause(ctx, exc)
        if cause is not None:
            return _connection(exc, cause, exc.traceback)
        return Execution(Verdict.ERROR, message=str(exc), traceback=exc.traceback, error=exc)
    except Retry as sig:
        return Execution(Verdict.RETRY, message=str(sig), delay=sig.delay, error=sig)
    except RobotFailure as fail:
        return Execution(Verdict.FAILURE, outputs=_partial(outputs, fail.outputs), message=fail.message, error=fail)
    except InputError as exc:  # the handler returned outputs that do not fit the declaration
        return Execution(Verdict.BAD_OUTPUTS, message=str(exc), error=exc)
    except SandboxLimitExceeded as exc:
        return Execution(Verdict.LIMIT, message=f"stopped by the {exc.limit} limit: {exc}", error=exc)
    except B24RobotsError as exc:
        return Execution(Verdict.ERROR, message=f"{type(exc).__name__}: {exc}", error=exc)
    except Exception as exc:  # robot code is user code: anything may happen
        tb = "".join(traceback.format_exception(exc))
        return Execution(Verdict.ERROR, message=f"{type(exc).__name__}: {exc}", traceback=tb, error=exc)
