"""A fake 1C:Enterprise infobase speaking the standard OData interface, for tests without a 1C.

It keeps catalogs and documents in memory and answers with the URL and JSON shapes of the 1C:Enterprise
8.3 Developer Guide, chapter 17.4 "Standard OData interface": ``/<base>/odata/standard.odata/Catalog_X``
with ``$format=json``, ``$filter`` (a subset: ``eq ne gt ge lt le``, ``and``/``or``,
``substringof('text', Field)``), ``$select``, ``$top``, ``$skip``, ``$orderby``; one object as
``Catalog_X(guid'…')``; POST creates, PATCH updates, DELETE deletes; ``Document_X(guid'…')/Post``
posts a document; errors as ``{"odata.error": {"code": …, "message": {"lang": "ru", "value": …}}}``
and basic auth with an infobase user. ``$metadata`` lists the entity sets.

    fake = FakeOneC()
    fake.add("Catalog_Контрагенты", Description="ООО Ромашка", ИНН="7701234567")
    with FakeOneCServer(fake) as server:
        server.base_url   # http://127.0.0.1:<port>/demo/odata/standard.odata/
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import uvicorn

from b24robots.errors import SimulatorError

_ENTITY = re.compile(r"^(?P<set>[A-Za-z]+_[^\W\d][\w]*?)(?:\((?P<key>[^)]*)\))?(?:/(?P<action>Post|Unpost))?$")
_GUID = re.compile(r"^guid'([0-9a-fA-F-]{36})'$")
_TOKEN = re.compile(r"\s*(guid'[^']*'|datetime'[^']*'|'(?:[^']|'')*'|\(|\)|,|[^\s(),]+)")


@dataclass
class Seen:
    """One request the fake received (for assertions): method, path (decoded), query, user."""

    method: str
    path: str
    query: dict[str, str]
    user: str
    at: float = field(default_factory=time.time)


class ODataFault(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class FakeOneC:
    """In-memory entity sets; `app` is the ASGI application. Change state from Python freely."""

    def __init__(
        self,
        *,
        infobase: str = "demo",
        username: str = "odata",
        password: str = "odata-secret",  # noqa: S107 - the fake's test user
    ) -> None:
        self.infobase = infobase
        self.username = username
        self.password = password
        self.entities: dict[str, dict[str, dict[str, Any]]] = {}
        self.seen: list[Seen] = []
        self.delay = 0.0  # seconds every answer waits (to test caps and timeouts)
        self.active = 0
        self.max_active = 0
        self._faults: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()

    @property
    def root(self) -> str:
        return f"/{self.infobase}/odata/standard.odata/"

    def add(self, entity: str, **fields: Any) -> dict[str, Any]:
        """Add an object; `Ref_Key` is generated unless given. Documents start unposted."""
        ref = str(fields.pop("Ref_Key", uuid.uuid4()))
        obj: dict[str, Any] = {"Ref_Key": ref, "DeletionMark": False}
        if entity.startswith("Catalog_"):
            obj.update(Code=f"{len(self.entities.get(entity, {})) + 1:09d}", Description="")
        if entity.startswith("Document_"):
            obj.update(Number=f"{len(self.entities.get(entity, {})) + 1:011d}", Posted=False)
        obj.update(fields)
        self.entities.setdefault(entity, {})[ref] = obj
        return dict(obj)

    def fail_next(self, status: int = 500, code: str = "-1", message: str = "Произошла внутренняя ошибка") -> None:
        """The next request answers this odata.error."""
        self._faults.append((status, code, message))

    # ------------------------------------------------------------------ ASGI
    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            status, payload, ctype = self._handle(
                scope["method"], scope["path"], scope.get("query_string", b"").decode(), headers, body
            )
        finally:
            with self._lock:
                self.active -= 1
        out_headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(payload)).encode())]
        if status == 401:
            out_headers.append((b"www-authenticate", b'Basic realm="1C"'))
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": payload})

    def _user(self, headers: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user if (user, password) == (self.username, self.password) else None

    def _handle(
        self, method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        query = {unquote(k): unquote(v) for k, _, v in (p.partition("=") for p in query_string.split("&") if p)}
        user = self._user(headers)
        self.seen.append(Seen(method, path, query, user or ""))
        if user is None:
            return 401, b"", "text/plain"
        try:
            if not path.startswith(self.root):
                raise ODataFault(404, "404", f"Не найден ресурс {path}")
            rest = path[len(self.root) :]
            if self._faults:
                status, code, message = self._faults.pop(0)
                raise ODataFault(status, code, message)
            if rest == "$metadata":
                return 200, self._metadata().encode(), "application/xml"
            return self._entity(method, rest, query, body)
        except ODataFault as fault:
            err = {"odata.error": {"code": fault.code, "message": {"lang": "ru", "value": fault.message}}}
            return fault.status, json.dumps(err, ensure_ascii=False).encode(), "application/json;charset=utf-8"

    def _metadata(self) -> str:
        sets = "".join(
            f'<EntitySet Name="{name}" EntityType="StandardODATA.{name}"/>' for name in sorted(self.entities)
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?><edmx:Edmx Version="1.0" '
            'xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"><edmx:DataServices>'
            '<Schema Namespace="StandardODATA"><EntityContainer Name="EnterpriseV8" '
            f'm:IsDefaultEntityContainer="true">{sets}</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>'
        )

    def _answer(self, status: int, data: Any) -> tuple[int, bytes, str]:
        return status, json.dumps(data, ensure_ascii=False, default=str).encode(), "application/json;charset=utf-8"

    def _entity(self, method: str, rest: str, query: Mapping[str, str], body: bytes) -> tuple[int, bytes, str]:
        match = _ENTITY.match(rest)
        if not match:
            raise ODataFault(400, "6", f"Неправильный адрес ресурса: {rest}")
        name, key, action = match["set"], match["key"], match["action"]
        if name not in self.entities and not (method == "POST" and key is None):
            raise ODataFault(400, "6", f"Не найден сегмент {name}")
        meta = f"http://localhost{self.root}$metadata#{name}"
        table = self.entities.setdefault(name, {})
        if key is None:
            if method == "GET":
                rows = [dict(r) for r in table.values()]
                if query.get("$filter"):
                    test = _parse_filter(query["$filter"])
                    rows = [r for r in rows if test(r)]
                if query.get("$orderby"):
                    for part in reversed(query["$orderby"].split(",")):
                        fld, _, direction = part.strip().partition(" ")
                        rows.sort(key=lambda r: str(r.get(fld, "")), reverse=direction.lower() == "desc")
                skip = int(query.get("$skip", "0") or 0)
                rows = rows[skip:]
                if "$top" in query:
                    rows = rows[: int(query["$top"])]
                if query.get("$select"):
                    keep = [f.strip() for f in query["$select"].split(",")]
                    rows = [{k: r[k] for k in keep if k in r} for r in rows]
                return self._answer(200, {"odata.metadata": meta, "value": rows})
            if method == "POST":
                try:
                    fields = json.loads(body or b"{}")
                except ValueError:
                    raise ODataFault(400, "10", "Неправильный формат тела запроса") from None
                if not isinstance(fields, dict):
                    raise ODataFault(400, "10", "Неправильный формат тела запроса")
                return self._answer(201, {"odata.metadata": meta + "/@Element", **self.add(name, **fields)})
            raise ODataFault(405, "11", f"Метод {method} не поддерживается для набора")
        guid = _GUID.match(key)
        if not guid:
            raise ODataFault(400, "8", f"Неправильный ключ: {key}")
        ref = guid.group(1)
        obj = table.get(ref)
        if obj is None:
            raise ODataFault(404, "9", f"Объект не найден: {name}(guid'{ref}')")
        if action is not None:
            if method != "POST" or not name.startswith("Document_"):
                raise ODataFault(400, "15", "Проводить можно только документы методом POST")
            obj["Posted"] = action == "Post"
            return 200, b"", "application/json"
        if method == "GET":
            return self._answer(200, {"odata.metadata": meta + "/@Element", **obj})
        if method in ("PATCH", "PUT"):
            try:
                fields = json.loads(body or b"{}")
            except ValueError:
                raise ODataFault(400, "10", "Неправильный формат тела запроса") from None
            fields.pop("Ref_Key", None)
            obj.update(fields)
            return self._answer(200, {"odata.metadata": meta + "/@Element", **obj})
        if method == "DELETE":
            del table[ref]
            return 200, b"", "application/json"
        raise ODataFault(405, "11", f"Метод {method} не поддерживается")


def _literal(token: str) -> Any:
    if token.startswith("guid'") or token.startswith("datetime'"):
        return token.split("'", 1)[1][:-1]
    if token.startswith("'"):
        return token[1:-1].replace("''", "'")
    if token in ("true", "false"):
        return token == "true"  # noqa: S105
    if token == "null":  # noqa: S105
        return None
    try:
        return float(token) if "." in token else int(token)
    except ValueError:
        raise ODataFault(400, "14", f"Ошибка разбора $filter около {token!r}") from None


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
}


Predicate = Callable[[Mapping[str, Any]], bool]


def _parse_filter(text: str) -> Predicate:
    """A predicate over one object for the `$filter` subset this fake understands."""
    tokens = [t for t in _TOKEN.findall(text) if t.strip()]
    pos = 0

    def peek() -> str:
        return tokens[pos] if pos < len(tokens) else ""

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ODataFault(400, "14", "Неожиданный конец $filter")
        pos += 1
        return str(tokens[pos - 1])

    def primary() -> Predicate:
        tok = take()
        if tok == "(":
            inner = disjunction()
            if take() != ")":
                raise ODataFault(400, "14", "Ожидалась ')' в $filter")
            return inner
        if tok == "not":
            inner = primary()
            return lambda r: not inner(r)
        if tok == "substringof":
            if take() != "(":
                raise ODataFault(400, "14", "Ожидалась '(' после substringof")
            needle = _literal(take())
            take()  # ,
            fld = take()
            take()  # )
            return lambda r: str(needle).lower() in str(r.get(fld, "")).lower()
        fld, op = tok, take()
        if op not in _OPS:
            raise ODataFault(400, "14", f"Неизвестная операция {op!r} в $filter")
        value = _literal(take())
        fn = _OPS[op]
        return lambda r: fn(r.get(fld), value)

    def conjunction() -> Predicate:
        parts = [primary()]
        while peek() == "and":
            take()
            parts.append(primary())
        return lambda r: all(p(r) for p in parts)

    def disjunction() -> Predicate:
        parts = [conjunction()]
        while peek() == "or":
            take()
            parts.append(conjunction())
        return lambda r: any(p(r) for p in parts)

    predicate = disjunction()
    if pos != len(tokens):
        raise ODataFault(400, "14", f"Лишний текст в $filter: {' '.join(tokens[pos:])}")
    return predicate


class LocalServer:
    """``with LocalServer(asgi_app) as server:`` serves any ASGI app on 127.0.0.1 (a free port), HTTP or HTTPS."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.scheme = "https" if ssl_certfile else "http"
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            interface="asgi3",
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="b24r-local-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise SimulatorError(f"the server could not listen on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise SimulatorError(f"the server did not start within {timeout} s")
            time.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class FakeOneCServer(LocalServer):
    """``with FakeOneCServer(fake) as server:`` serves the fake on a free port; `base_url` is the OData root.

    Pass `ssl_certfile`/`ssl_keyfile` to serve HTTPS (e.g. with a certificate from your own test CA).
    """

    def __init__(
        self,
        fake: FakeOneC | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        self.fake = fake or FakeOneC()
        super().__init__(self.fake.app, host, port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)

    @property
    def base_url(self) -> str:
        return self.origin + self.fake.root

    def __enter__(self) -> FakeOneCServer:
        self.start()
        return self
