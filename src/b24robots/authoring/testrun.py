"""Test runs: a robot run once with given inputs, outside any portal (REST refused), its outputs, log and calls."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from b24robots.connections.hub import ConnectionHub, RunConnections
from b24robots.errors import InputError, RestError, StoredCodeError
from b24robots.jobs.execution import Verdict, execute
from b24robots.jobs.runner import Runner
from b24robots.robots.context import RobotContext
from b24robots.robots.params import parse_values
from b24robots.robots.registry import Registry, Resolved
from b24robots.robots.spec import RobotSpec
from b24robots.sandbox import SandboxPool

# --- test runs --------------------------------------------------------------------------------

TEST_RUN_PORTAL = "test-run.invalid"


class _NoRest:
    """REST is not available in a test run: the portal is never called."""

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        raise RestError("NOT_AVAILABLE_IN_TEST_RUN", "REST calls are not available in a test run", method=method)

    async def batch(self, commands: Any, halt: bool = False) -> Any:
        raise RestError("NOT_AVAILABLE_IN_TEST_RUN", "REST calls are not available in a test run", method="batch")


@dataclass
class TestRun:
    """The result of a test run: typed outputs (as the portal would get them), log lines, timing, error."""

    __test__ = False  # not a pytest class

    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    error: str = ""
    origin: str = ""
    version: int | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)


def raw_inputs(spec: RobotSpec, given: Mapping[str, str]) -> dict[str, Any]:
    """Turn text inputs (as typed in a form or `--input key=value`) into `properties` as a portal sends them;
    multiple parameters take one value per line or comma-separated values."""
    props: dict[str, Any] = {}
    for p in spec.inputs:
        text = given.get(p.key, "")
        if p.multiple:
            parts = [x.strip() for x in re.split(r"[\n,]", text) if x.strip()]
            props[p.key] = parts
        else:
            props[p.key] = text.strip()
    unknown = sorted(set(given) - {p.key for p in spec.inputs})
    if unknown:
        raise InputError(
            unknown[0],
            f"is not an input of robot {spec.code!r} (inputs: {', '.join(p.key for p in spec.inputs) or 'none'})",
        )
    return props


async def test_run(
    resolved: Resolved,
    given: Mapping[str, str],
    sandbox: SandboxPool | None,
    document_id: str = "DEAL_1",
    connections: ConnectionHub | None = None,
) -> TestRun:
    """Run a robot with sample inputs, without a portal: `ctx.call` raises a RestError saying so.

    The robot's connections are real (their values for all portals): a test run reaches them."""
    spec = resolved.spec
    result = TestRun(ok=False, origin=resolved.origin, version=resolved.stored.version if resolved.stored else None)
    try:
        values = parse_values(spec.inputs, raw_inputs(spec, given))
    except InputError as exc:
        result.error = f"bad input: {exc}"
        return result
    ctx = RobotContext(
        portal=TEST_RUN_PORTAL,
        member_id="",
        code=spec.code,
        workflow_id="test-run",
        document_id=["crm", "CCrmDocumentDeal", document_id],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        event_token="test-run",  # noqa: S106 - not a secret: test runs have no portal event
        rest=_NoRest(),
    )
    started = time.perf_counter()
    runner = Runner(registry=Registry(), sandbox=sandbox, connections=connections)
    done = await execute(lambda: runner.call(resolved, values, ctx), spec.outputs, ctx)
    error = done.error
    match done.verdict:
        case Verdict.OK:
            result.outputs, result.ok = done.outputs, True
        case Verdict.FAILURE:
            result.error = f"the robot reported a failure: {done.message}"
            result.outputs = done.outputs
        case Verdict.RETRY:
            result.error = f"the robot asked to be retried later: {done.message}"
        case _ if isinstance(error, StoredCodeError):
            result.error = f"{error}\n{error.traceback}".strip()
            result.log = list(getattr(error, "log", ()) or ())
        case _:
            result.error = f"{type(error).__name__}: {error}"
            result.log = list(getattr(error, "log", ()) or ())
    result.duration_ms = (time.perf_counter() - started) * 1000
    result.log = result.log or list(ctx.logs)
    scope = ctx.connections
    if isinstance(scope, RunConnections):
        result.calls = [r.as_dict() for r in scope.records]
    return result
