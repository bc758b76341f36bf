"""REST calls made by robot code, kept in the run's journal of outbound calls.

`ctx.rest` / `ctx.rest_as_caller` (module robots) and the proxied `ctx.call` / `ctx.batch` /
`ctx.call_as_caller` (stored code) go through `RecordedRest`, which notes each call as a `CallRecord`
(connection "bitrix24", kind "rest"): the REST method, the status (200, or the HTTP status of the
error), the portal's error code and the duration. Never the parameters (robot code may put anything in
them) and never the portal's error description (it may repeat a parameter); tokens never reach here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from b24robots.connections.base import CallRecord
from b24robots.errors import RestError

REST_CONNECTION, REST_KIND = "bitrix24", "rest"
MAX_TARGET = 255


def _batch_target(commands: Any) -> str:
    """`batch: crm.deal.get, user.current` from dict or list commands (methods only, no parameters)."""
    items = commands.values() if isinstance(commands, Mapping) else commands if isinstance(commands, list) else []
    methods: list[str] = []
    for item in items:
        method = item[0] if isinstance(item, list | tuple) and item else item
        methods.append(str(method).split("?", 1)[0][:64])
    text = "batch: " + ", ".join(methods)
    return text if len(text) <= MAX_TARGET else text[: MAX_TARGET - 1] + "…"


class RecordedRest:
    """A portal REST client that notes every `call`, `call_envelope` and `batch` through `note`.

    `as_user` marks calls made with the run-as user's token (method "call (user)"). Anything else
    (`list_all`, attributes) is the wrapped client's own.
    """

    def __init__(self, inner: Any, note: Callable[[CallRecord], None], *, as_user: bool = False) -> None:
        self.inner = inner
        self._note = note
        self._suffix = " (user)" if as_user else ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _record(self, kind: str, target: str, started: float, exc: BaseException | None, batch: Any = None) -> None:
        status: int | None = 200
        error = ""
        if isinstance(exc, RestError):
            status, error = exc.status, exc.code or type(exc).__name__
        elif exc is not None:
            status, error = None, type(exc).__name__
        failed = getattr(batch, "errors", None)
        if exc is None and isinstance(failed, Mapping) and failed:
            codes = sorted({str(getattr(e, "code", "") or "ERROR") for e in failed.values()})
            error = f"{len(failed)} command(s) failed: {', '.join(codes)}"[:500]
        self._note(
            CallRecord(
                REST_CONNECTION,
                REST_KIND,
                kind + self._suffix,
                target[:MAX_TARGET],
                status=status,
                duration_ms=(time.perf_counter() - started) * 1000,
                error=error,
            )
        )

    async def call(self, method: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await self.inner.call(method, params, **kwargs)
        except BaseException as exc:
            self._record("call", str(method), started, exc)
            raise
        self._record("call", str(method), started, None)
        return result

    async def call_envelope(self, method: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await self.inner.call_envelope(method, params, **kwargs)
        except BaseException as exc:
            self._record("call", str(method), started, exc)
            raise
        self._record("call", str(method), started, None)
        return result

    async def batch(self, commands: Any, halt: bool = False) -> Any:
        started = time.perf_counter()
        target = _batch_target(commands)
        try:
            result = await self.inner.batch(commands, halt)
        except BaseException as exc:
            self._record("batch", target, started, exc)
            raise
        self._record("batch", target, started, None, result)
        return result


def recorded(rest: Any, note: Callable[[CallRecord], None], *, as_user: bool = False) -> Any:
    """`rest` wrapped by `RecordedRest` (None stays None; a wrapped client is not wrapped twice)."""
    if rest is None or isinstance(rest, RecordedRest):
        return rest
    return RecordedRest(rest, note, as_user=as_user)
