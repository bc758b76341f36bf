"""`POST /b24/robot` as a bare ASGI handler, served before FastAPI's routing.

Every robot call of every portal comes here, so its CPU per call bounds the intake (issue 20). FastAPI's
per-request work (route matching over every route, dependency solving, a `Request`, an exception-handling
`send` wrapper, a `JSONResponse`) cost about as much as the form codec; none of it is needed here: the call
has no cookies, sessions or CSRF, no query, and one answer shape. `RobotCallFastPath` is a pure ASGI
middleware that takes `POST /b24/robot` and hands everything else to the app unchanged.

A call whose portal and robot are in memory (store/cache.py) is verified and parsed on the event loop and
waits there for its group's commit; only a call that needs a database read goes to the thread pool. Either
way the answer is sent after the commit (store/group_commit.py).

The behaviour is the route's (app.py keeps it, so OpenAPI documents the endpoint and its answers):
the body within the codec's size limit, 400 for a JSON or undecodable body, 503 when the journal cannot be
written, the intake's answer otherwise, and 400 to a client that went away mid-body.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from b24robots.errors import FormDecodeError, StoreError, StoreRefused, StoreUnavailable
from b24robots.fields import as_int
from b24robots.inbound.formcodec import DEFAULT_LIMITS, decode_form
from b24robots.portal.robot_call import Intake
from b24robots.store.db import NeedsDatabase, memory_only
from b24robots.web.metrics import Metrics

log = logging.getLogger("b24robots.web")

ROBOT_PATH = "/b24/robot"
_JSON = b"application/json"


class ClientGone(Exception):
    """The client closed the connection before its body was complete."""


def decode_robot_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The decoded form of a robot call's body; FormDecodeError for a JSON body or a malformed form."""
    if content_type.startswith("application/json"):
        raise FormDecodeError("expected an application/x-www-form-urlencoded body, got JSON")
    return decode_form(body)


def too_long(content_length: str) -> FormDecodeError | None:
    declared = as_int(content_length, maximum=None)  # "²".isdigit() is true and int("²") raises
    if declared is not None and declared > DEFAULT_LIMITS.max_body_bytes:
        return FormDecodeError(f"body is {content_length} bytes; the limit is {DEFAULT_LIMITS.max_body_bytes}")
    return None


def over_limit() -> FormDecodeError:
    return FormDecodeError(f"body is over the limit of {DEFAULT_LIMITS.max_body_bytes} bytes")


def _dumps(body: Any) -> bytes:
    # what starlette's JSONResponse renders
    return json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


class RobotCall:
    """Decode, accept, answer: shared by the fast path and the documented route."""

    def __init__(self, intake: Intake, metrics: Metrics) -> None:
        self.intake = intake
        self.metrics = metrics

    async def answer(self, body: bytes | FormDecodeError, content_type: str, started: float) -> tuple[int, Any]:
        """(status, JSON body) for a call whose body was read (or refused while reading)."""
        try:
            if isinstance(body, FormDecodeError):
                raise body
            form = decode_robot_body(body, content_type)
        except FormDecodeError as exc:
            self.metrics.observe_ack(time.perf_counter() - started, "bad_request")
            return 400, {"error": "bad_request", "reason": exc.reason}
        try:
            try:
                with memory_only():  # the portal and the robot are in memory: no thread hand-off
                    taken = self.intake.take(form)
            except NeedsDatabase:
                status, answer = await run_in_threadpool(self.intake.accept, form)
            else:
                status, answer = await taken.wait_async()
        except StoreRefused as exc:
            # this call's data, not the database: the same call would fail again, others are stored
            log.warning("a robot call was refused by the database: %s", exc.reason)
            self.metrics.observe_ack(time.perf_counter() - started, "bad_request")
            return 400, {"error": "bad_request", "reason": f"the journal cannot hold this call: {exc.reason}"}
        except StoreError as exc:
            log.error("could not store a robot call: %s", exc)
            reason = exc.reason if isinstance(exc, StoreUnavailable) else str(exc)
            self.metrics.observe_ack(time.perf_counter() - started, "unavailable")
            return 503, {
                "error": "unavailable",
                "reason": f"the journal cannot be written right now ({reason}); nothing was stored and the portal"
                " does not retry: the robot waits until its timeout",
            }
        self.metrics.observe_ack(time.perf_counter() - started, str(answer.get("status", answer.get("error"))))
        return status, answer


class RobotCallFastPath:
    """Pure ASGI middleware: serves `POST /b24/robot` with `call`, passes every other request to `app`."""

    def __init__(self, app: ASGIApp, call: RobotCall) -> None:
        self.app = app
        self.call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in (ROBOT_PATH, scope.get("root_path", "") + ROBOT_PATH)
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        content_type, content_length = "", ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
        try:
            body = await _read_body(receive, content_length)
        except ClientGone:
            # closed mid-body, or cut off at the body deadline (web/server.py): nobody reads an answer
            await _send(send, 400, b"")
            return
        status, answer = await self.call.answer(body, content_type, started)
        await _send(send, status, _dumps(answer), _JSON)


async def _read_body(receive: Receive, content_length: str) -> bytes | FormDecodeError:
    """The whole body, or the FormDecodeError that refuses it by its size (the rest is not read)."""
    refused = too_long(content_length)
    if refused is not None:
        return refused
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > DEFAULT_LIMITS.max_body_bytes:
                return over_limit()
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(send: Send, status: int, payload: bytes, content_type: bytes | None = None) -> None:
    headers = [(b"content-length", str(len(payload)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
