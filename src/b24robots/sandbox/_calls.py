"""Stored code's `ctx.http(name)`, `ctx.onec(name)`, `ctx.sql(name)`: requests the parent performs.

Stdlib only: loaded into the zygote with `_wire`. The sandbox has no network and no secret; each
method sends one ``conn`` frame and the parent runs the call through the same connection hub as a
module robot's (origin rule, caps, rate limit, journal). The shape mirrors robots/context.py's
HttpCalls / OneCCalls / SqlCalls, so a robot reads the same in both places.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from typing import Any

Send = Callable[[dict[str, Any]], Any]

HTTP_KWARGS = frozenset({"params", "json", "data", "headers", "check"})


class ConnectionError(Exception):
    """A call through a connection failed; `code` is e.g. NOT_AVAILABLE, ORIGIN, REMOTE, TIMEOUT, SQL."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Response:
    """What an http connection answered: `.status`, `.headers`, `.content`, `.text`, `.json()`, `.ok`."""

    __slots__ = ("content", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content) if self.content else None

    @property
    def ok(self) -> bool:
        return self.status < 400

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def _response(value: Any) -> Response:
    if not isinstance(value, dict):
        raise ConnectionError("BAD", "the server sent a malformed response")
    content = binascii.a2b_base64(str(value.get("content", "")))
    headers = value.get("headers")
    return Response(int(value.get("status", 0)), dict(headers) if isinstance(headers, dict) else {}, content)


class _Calls:
    __slots__ = ("_kind", "_name", "_send")

    def __init__(self, send: Send, kind: str, name: str) -> None:
        self._send = send
        self._kind = kind
        self._name = name

    def _do(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return self._send({"kind": self._kind, "name": self._name, "op": op, "args": args, "kwargs": kwargs})

    def __repr__(self) -> str:
        return f"<{self._kind} connection {self._name!r}>"


class HttpCalls(_Calls):
    """`ctx.http(name)`: paths are relative to the connection's base URL; 4xx/5xx raise unless check=False."""

    __slots__ = ()

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        unknown = sorted(set(kwargs) - HTTP_KWARGS)
        if unknown:
            raise TypeError(f"ctx.http(...).request: unknown argument(s) {', '.join(unknown)}")
        if isinstance(kwargs.get("data"), (bytes, bytearray)):
            kwargs["data"] = bytes(kwargs["data"]).decode("utf-8")
        return _response(self._do("request", [method, path], kwargs))

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.request("DELETE", path, **kwargs)


class OneCCalls(_Calls):
    """`ctx.onec(name)`: objects of a 1C infobase through its standard OData interface."""

    __slots__ = ()

    def list(self, entity: str, **kwargs: Any) -> Any:
        return self._do("list", [entity], kwargs)

    def first(self, entity: str, **kwargs: Any) -> Any:
        return self._do("first", [entity], kwargs)

    def get(self, entity: str, key: Any) -> Any:
        return self._do("get", [entity, key], {})

    def create(self, entity: str, fields: dict[str, Any]) -> Any:
        return self._do("create", [entity, fields], {})

    def update(self, entity: str, key: Any, fields: dict[str, Any]) -> Any:
        return self._do("update", [entity, key, fields], {})

    def delete(self, entity: str, key: Any) -> None:
        self._do("delete", [entity, key], {})

    def post_document(self, document: str, key: str, *, operational: bool = False) -> None:
        self._do("post_document", [document, key], {"operational": operational})

    def unpost_document(self, document: str, key: str) -> None:
        self._do("unpost_document", [document, key], {})


class SqlCalls(_Calls):
    """`ctx.sql(name)`: parameterised statements (`:name` placeholders, values as keyword arguments)."""

    __slots__ = ()

    def query(self, statement: str, /, **params: Any) -> Any:
        return self._do("query", [statement], params)

    def first(self, statement: str, /, **params: Any) -> Any:
        return self._do("first", [statement], params)

    def execute(self, statement: str, /, **params: Any) -> Any:
        return self._do("execute", [statement], params)


KINDS: dict[str, type[_Calls]] = {"http": HttpCalls, "1c": OneCCalls, "sql": SqlCalls}
