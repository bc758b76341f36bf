"""Run one invocation: resolve the robot, parse inputs, call the handler, decide the outcome.

Module robots run in-process (sync handlers in a thread, async ones on the loop); stored robots
run in the sandbox pool, with REST calls proxied back here where tokens and the rate limit live.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from b24robots.connections.hub import ConnectionHub, RunConnections
from b24robots.errors import (
    B24RobotsError,
    ConnectionCallError,
    ConnectionNotAvailable,
    InputError,
    MethodError,
    SandboxError,
)
from b24robots.fields import as_int
from b24robots.policy import RetryRules
from b24robots.robots.context import RobotContext
from b24robots.robots.params import default_outputs, parse_values
from b24robots.robots.registry import Registry, Resolved
from b24robots.robots.triggers import Entity
from b24robots.robots.values import short
from b24robots.sandbox import DEFAULT_METHODS, MethodPolicy, RunProxy, SandboxLimits, SandboxPool
from b24robots.store.db import read_off_loop
from b24robots.store.journal import Invocation

from .execution import Execution, Verdict, execute
from .rest_record import recorded

Kind = Literal["answer", "retry", "dead"]


@dataclass
class Outcome:
    kind: Kind
    outputs: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    log_message: str = ""
    error: str = ""
    delay: float = 0.0
    # what ran (see `ran_of`); None when nothing did (the robot is not declared here)
    ran: dict[str, Any] | None = None


def ran_of(resolved: Resolved) -> dict[str, Any]:
    """What runs for a call, as the journal keeps it: the stored version (id, number, content hash), or
    the module robot's handler and its spec fingerprint (the registration payload's hash, no URL)."""
    if resolved.stored is not None:
        stored = resolved.stored
        return {
            "origin": "stored",
            "version_id": stored.version_id,
            "version": stored.version,
            "hash": stored.content_hash,
        }
    assert resolved.module is not None
    handler = resolved.module.handler
    name = f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', repr(handler))}"
    return {"origin": "module", "module": name, "fingerprint": resolved.spec.fingerprint()}


class Runner:
    def __init__(
        self,
        registry: Registry,
        *,
        sandbox: SandboxPool | None = None,
        sandbox_limits: SandboxLimits | None = None,
        rules: RetryRules | None = None,
        connections: ConnectionHub | None = None,
        methods: tuple[str, ...] = DEFAULT_METHODS,
    ) -> None:
        self.registry = registry
        self.methods = methods  # the REST methods stored code may call (B24R_SANDBOX_METHODS)
        self.sandbox = sandbox
        self.sandbox_limits = sandbox_limits
        self.rules = rules or RetryRules()
        self.connections = connections

    async def run(self, inv: Invocation, ctx: RobotContext) -> Outcome:
        """Run one attempt of `inv`; the outcome says what ran, what it logged and what comes next."""
        # from the register's cache on the loop; a lapsed cache is read in a thread, off the loop
        resolved = await read_off_loop(self.registry.resolve, inv.robot_code)
        if resolved is None:
            return self._unavailable(inv.robot_code)
        outcome = await self._run(resolved, inv, ctx)
        outcome.ran = ran_of(resolved)
        return outcome

    async def _run(self, resolved: Resolved, inv: Invocation, ctx: RobotContext) -> Outcome:
        spec = resolved.spec
        warnings: list[str] = []
        try:
            values = parse_values(spec.inputs, inv.properties, culture=ctx.culture, warnings=warnings)
        except InputError as exc:
            return Outcome(
                "dead",
                outputs=default_outputs(spec.outputs),
                error=str(exc),
                log_message=short(f"b24robots: bad input: {exc}"),
            )
        for warning in warnings:  # lenient readings go to the run log, so the workflow's owner sees them
            ctx.log(f"b24robots: input {warning}")
        try:
            done = await execute(lambda: self.call(resolved, values, ctx), spec.outputs, ctx)
        finally:
            await self._flush(ctx)
        return self._outcome(done, spec.outputs, ctx, inv)

    def _outcome(self, done: Execution, params: Any, ctx: RobotContext, inv: Invocation) -> Outcome:
        """What a verdict means for a call from a portal: an answer, a retry under the rules, or a dead letter."""
        match done.verdict:
            case Verdict.OK:
                return Outcome("answer", outputs=done.outputs, log=list(ctx.logs))
            case Verdict.FAILURE:
                return Outcome(
                    "answer",
                    outputs={**default_outputs(params), **done.outputs},
                    log=list(ctx.logs),
                    log_message=short(done.message),
                    error=done.message,
                )
            case Verdict.RETRY:
                if not self.rules.may_signal_retry(inv.attempts):
                    return self._dead(params, ctx, f"gave up after {inv.attempts} retries: {done.message}")
                return Outcome("retry", log=list(ctx.logs), error=f"retry requested: {done.message}", delay=done.delay)
            case Verdict.BAD_OUTPUTS:
                return self._dead(params, ctx, f"the robot returned bad outputs: {done.message}")
            case Verdict.LIMIT:
                return self._dead(params, ctx, done.message)
            case Verdict.CONNECTION:
                # say what went wrong with a connection in the robot's log; retry only what may pass
                assert done.connection is not None
                ctx.log(f"b24robots: {done.connection}")
                if done.permanent:
                    return self._dead(params, ctx, str(done.connection))
                summary = f"{type(done.connection).__name__}: {done.connection}"
                return self._failed(params, ctx, inv, summary, done.traceback)
            case _:
                return self._failed(params, ctx, inv, done.message, done.traceback)

    def _unavailable(self, code: str) -> Outcome:
        """A call for a robot that does not run here (any more): answered, so the workflow goes on, with a
        log line that says why."""
        error, log_message = self.registry.unavailable(code)
        return Outcome("dead", error=error, log_message=log_message)

    async def _flush(self, ctx: RobotContext) -> None:
        scope = ctx.connections
        if isinstance(scope, RunConnections):
            try:
                await asyncio.to_thread(scope.flush)
            except B24RobotsError as exc:
                ctx.log(f"b24robots: {exc}")

    def _dead(self, params: Any, ctx: RobotContext, error: str) -> Outcome:
        return Outcome(
            "dead",
            outputs=default_outputs(params),
            log=list(ctx.logs),
            error=error,
            log_message=short(f"b24robots: {error}"),
        )

    def _failed(self, params: Any, ctx: RobotContext, inv: Invocation, summary: str, tb: str) -> Outcome:
        error = f"{summary}\n{tb}".strip()
        if self.rules.may_retry(inv.attempts):
            return Outcome("retry", log=list(ctx.logs), error=error, delay=self.rules.backoff(inv.attempts))
        outcome = self._dead(params, ctx, f"failed after {inv.attempts} attempts: {summary}")
        outcome.error = f"failed after {inv.attempts} attempts: {error}"
        return outcome

    async def call(self, resolved: Resolved, values: dict[str, Any], ctx: RobotContext) -> dict[str, Any]:
        """Run the robot's code once and return its raw outputs (not yet dumped).

        Module robots run in-process; stored robots in the sandbox, where `ctx.call` / `ctx.batch`
        are served by `ctx.rest` (a RestError raised there reaches the stored code as `ctx.RestError`).
        Control signals and errors propagate to the caller. Connections the robot declares are
        reachable through `ctx.http/onec/sql` (the caller flushes their journal: see `run`).
        """
        stored_limits: SandboxLimits | None = None
        if resolved.stored is not None:
            stored = resolved.stored
            stored_limits = SandboxLimits(**stored.limits) if stored.limits else self.sandbox_limits
        if self.connections is not None and ctx.connections is None:
            wall = None
            if resolved.stored is not None and self.sandbox is not None:
                wall = (stored_limits or self.sandbox.caps).clamp(self.sandbox.caps).wall_seconds
            ctx.connections = self.connections.scope(
                robot=resolved.spec.code,
                declared=resolved.spec.connections,
                member_id=ctx.member_id,
                domain=ctx.portal,
                deadline=time.monotonic() + wall if wall else None,
                invocation_id=ctx.invocation_id,
                attempt=ctx.attempt if ctx.invocation_id is not None else None,
            )
        scope = ctx.connections
        if isinstance(scope, RunConnections):  # the robot's REST calls join its journal of outbound calls
            ctx.rest = recorded(ctx.rest, scope.note)
            ctx.rest_as_caller = recorded(ctx.rest_as_caller, scope.note, as_user=True)
        if resolved.module is not None:
            module = resolved.module
            if module.is_async:
                result = await module.call(values, ctx)
            else:
                result = await asyncio.to_thread(module.call, values, ctx)
                if inspect.isawaitable(result):
                    result = await result
            return module.outputs_of(result)
        assert resolved.stored is not None
        if self.sandbox is None:
            raise SandboxError("stored robots cannot run: the sandbox pool is not started")
        loop = asyncio.get_running_loop()
        rest = ctx.rest

        def bounded(coro: Coroutine[Any, Any, Any], method: str) -> Any:
            # A slow portal (or the client's retries and rate-limit waits) must not hold the slot past
            # the run's limits: the call gets at most the wall and proxied time the run has left, is
            # cancelled then, and the pool stops the run with the limit that ran out (sandbox/pool.py).
            left = proxy.time_left()
            if left <= 0:
                coro.close()
                raise MethodError("TIMEOUT", "the run has no time left for this call", method=method)
            try:
                return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, left), loop).result()
            except TimeoutError:
                raise MethodError(
                    "TIMEOUT", f"no answer within the {left:.2f} s the run had left", method=method
                ) from None

        def on_call(method: str, params: dict[str, Any]) -> Any:
            if method.lower() in OUTBOUND_METHODS:  # fires go through the journal, never straight to the portal
                return bounded(_outbound(ctx, method, params), method)
            if rest is None:
                raise SandboxError("no REST client for this portal")
            return bounded(rest.call(method, params), method)

        as_caller = ctx.rest_as_caller

        def on_call_as_caller(method: str, params: dict[str, Any]) -> Any:
            if method.lower() in OUTBOUND_METHODS:  # journaled like every fire, with the installation's token
                return bounded(_outbound(ctx, method, params), method)
            assert as_caller is not None
            return bounded(as_caller.call(method, params), method)

        def on_batch(commands: Any) -> Any:
            if rest is None:
                raise SandboxError("no REST client for this portal")
            result = bounded(rest.batch(commands), "batch")
            return {
                "result": getattr(result, "results", result),
                "result_error": {
                    k: {"error": e.code, "error_description": e.description}
                    for k, e in getattr(result, "errors", {}).items()
                },
            }

        def on_connection(kind: str, name: str, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
            return _connection_call(ctx, kind, name, op, args, kwargs)

        proxy = RunProxy(
            on_call=on_call,
            on_batch=on_batch,
            on_call_as_caller=on_call_as_caller if as_caller is not None else None,
            on_connection=on_connection,
            methods=MethodPolicy(self.methods, robot=resolved.spec.code, narrowed=resolved.spec.methods),
        )
        if isinstance(ctx.connections, RunConnections):
            ctx.connections.budget.left = proxy.time_left  # connection calls spend the run's proxied time
        context = {
            "portal": ctx.portal,
            "document_id": list(ctx.document_id),
            "document_type": list(ctx.document_type),
            "workflow_id": ctx.workflow_id,
            "robot": ctx.code,
        }
        stored = resolved.stored
        limits = stored_limits
        lines: Sequence[str] = ()
        try:
            result = await asyncio.to_thread(
                self.sandbox.run,
                stored.source,
                values,
                context=context,
                limits=limits,
                proxy=proxy,
                filename=f"<robot {stored.spec.code} v{stored.version}>",
            )
            lines = result.log
        except SandboxError as exc:
            # what the code logged before it raised or hit a limit: kept like a successful run's lines
            lines = exc.log
            raise
        finally:
            for note in proxy.notes:  # refused requests, so the robot's owner sees them whatever the code did
                ctx.log(note)
            for line in lines:
                ctx.log(line)
        return dict(result.outputs)


_CONNECTION_KINDS = {"http": "http", "1c": "onec", "sql": "sql"}


def _connection_call(ctx: RobotContext, kind: str, name: str, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Stored code's `ctx.http/onec/sql(name).<op>(...)`, through the run's connection scope (the same
    hub, declared-connections rule, budget and journal as a module robot's). The op was checked
    against sandbox/proxy.py's CONNECTION_OPS; the scope checks the name and kind."""
    scope = ctx.connections
    if scope is None:
        raise ConnectionNotAvailable(name, "connections are not available in this run")
    try:
        api = getattr(scope, _CONNECTION_KINDS[kind])(name)
        return getattr(api, op)(*args, **kwargs)
    except ConnectionCallError as exc:
        if isinstance(scope, RunConnections):
            scope.last_error = exc
        raise


TRIGGER_EXECUTE, WORKFLOW_START = "crm.automation.trigger.execute", "bizproc.workflow.start"
OUTBOUND_METHODS = (TRIGGER_EXECUTE, WORKFLOW_START)


async def _outbound(ctx: RobotContext, method: str, params: Any) -> int:
    """Stored code's `ctx.fire_trigger` / `ctx.start_workflow` (and `ctx.call` of those two methods).

    The proxied params are the method's own (CODE + OWNER_TYPE_ID/OWNER_ID; TEMPLATE_ID + DOCUMENT_ID
    + PARAMETERS), or ENTITY as a document id like DEAL_42, or no entity: the robot's own document.
    The answer is the journal entry id; a refusal reaches the code as `ctx.RestError`.
    """
    try:
        p = {str(k).upper(): v for k, v in params.items()} if isinstance(params, Mapping) else {}
        entity: Entity | str | None
        if "OWNER_TYPE_ID" in p or "OWNER_ID" in p:
            entity = Entity(int(p.get("OWNER_TYPE_ID") or 0), int(p.get("OWNER_ID") or 0))
        elif "DOCUMENT_ID" in p:
            entity = Entity.from_document_id(p["DOCUMENT_ID"])
        else:
            entity = p.get("ENTITY")
            if entity is not None and not isinstance(entity, str):
                raise InputError("entity", "give the entity as a document id such as DEAL_42")
        if method.lower() == TRIGGER_EXECUTE:
            return await ctx.fire_trigger(str(p.get("CODE") or ""), entity)
        extra = p.get("PARAMETERS")
        template = p.get("TEMPLATE_ID")
        template_id = as_int(template if isinstance(template, int) else str(template or ""), minimum=1)
        if template_id is None:
            raise InputError("template_id", f"{template!r} is not a template id")
        return await ctx.start_workflow(template_id, entity, extra if isinstance(extra, Mapping) else None)
    except (B24RobotsError, RuntimeError, ValueError, TypeError) as exc:
        raise MethodError("OUTBOUND_REFUSED", str(exc), method=method) from None
