"""The `http` kind (and the transport under `1c`): one origin, its auth, its caps, its size limit.

Requests go only to the connection's own origin: paths are relative to the base URL, an absolute
URL must name the same scheme, host and port, and a redirect elsewhere is refused. Credentials are
added here, after the robot's request is built, so robot code never holds them.
"""

from __future__ import annotations

import base64
import json as _json
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from b24robots.connections.base import Budget, CallRecord, Gate, Recorder, clip, redact
from b24robots.connections.config import ConnectionConfig
from b24robots.errors import (
    ConnectionCallError,
    ConnectionUnreachable,
    OriginRefused,
    RemoteError,
    ResponseTooLarge,
)
from b24robots.fields import as_int

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
MAX_REDIRECTS = 5


@dataclass
class HttpResponse:
    """What came back: status, headers and the body (already read, within the size cap)."""

    status: int
    headers: dict[str, str]
    content: bytes = field(repr=False)
    url_path: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.content) if self.content else None

    @property
    def ok(self) -> bool:
        return self.status < 400


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, (parts.hostname or "").lower(), port)


def target_url(base_url: str, path: str, name: str) -> str:
    """The absolute URL of `path` under `base_url`, refusing anything that leaves its origin."""
    if not isinstance(path, str):
        raise OriginRefused(name, "the path must be text")
    if any(ord(c) < 32 for c in path) or "\\" in path:
        raise OriginRefused(name, "the path holds control characters or backslashes")
    if path.startswith("//") or "://" in path.split("?", 1)[0]:
        if origin(path) != origin(base_url):
            raise OriginRefused(
                name, f"{_origin_text(path)} is not this connection's origin ({_origin_text(base_url)}); use a path"
            )
        return path
    return urljoin(base_url, path.lstrip("/"))


def _origin_text(url: str) -> str:
    scheme, host, port = origin(url if "://" in url else "http:" + url)
    return f"{scheme}://{host}:{port}"


def _ssl_verify(config: ConnectionConfig) -> ssl.SSLContext | bool:
    if not config.get("verify"):
        return False
    pem = str(config.get("ca_bundle") or "")
    context = ssl.create_default_context()
    if pem.strip():
        try:
            context.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError):
            raise ConnectionCallError(config.name, "the CA bundle is not valid PEM text", code="TLS") from None
    return context


class HttpEngine:
    """The long-lived side of an http connection: pooled client, gate, cached OAuth2 token."""

    def __init__(self, config: ConnectionConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        self.base_url = str(config.get("base_url"))
        self.gate = Gate(
            config.name, int(config.get("concurrency")), float(config.get("rate")), int(config.get("burst"))
        )
        self._secrets = config.secret_values()
        self.client = httpx.Client(
            transport=transport,
            verify=_ssl_verify(config) if transport is None else True,
            follow_redirects=False,
            headers=dict(config.get("headers") or {}),
            limits=httpx.Limits(max_connections=max(1, int(config.get("concurrency")))),
        )
        self._token = ""
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ auth
    def _auth(self, request: httpx.Request, timeout: float, *, renew: bool = False) -> None:
        cfg = self.config
        mode = cfg.get("auth") if cfg.kind == "http" else "basic"
        if mode == "basic" and (cfg.get("username") or cfg.secret("password")):
            pair = f"{cfg.get('username')}:{cfg.secret('password')}".encode()
            request.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif mode == "bearer":
            request.headers["Authorization"] = f"Bearer {cfg.secret('token')}"
        elif mode == "header":
            request.headers[str(cfg.get("header_name"))] = cfg.secret("api_key")
        elif mode == "query":
            request.url = request.url.copy_merge_params({str(cfg.get("query_name")): cfg.secret("api_key")})
        elif mode == "oauth2":
            request.headers["Authorization"] = f"Bearer {self._oauth_token(timeout, renew)}"

    def _oauth_token(self, timeout: float, renew: bool) -> str:
        with self._token_lock:
            if self._token and not renew and time.monotonic() < self._token_expires:
                return self._token
            cfg = self.config
            form = {"grant_type": "client_credentials", "client_id": str(cfg.get("client_id"))}
            form["client_secret"] = cfg.secret("client_secret")
            if cfg.get("scope"):
                form["scope"] = str(cfg.get("scope"))
            try:
                answer = self.client.post(str(cfg.get("token_url")), data=form, timeout=timeout)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, "the OAuth2 token endpoint") from None
            try:
                body = answer.json()
                token, expires = str(body["access_token"]), float(body.get("expires_in", 300))
            except (ValueError, KeyError, TypeError):
                raise RemoteError(
                    self.name,
                    f"the OAuth2 token endpoint answered {answer.status_code} without an access_token",
                    status=answer.status_code,
                ) from None
            self._token, self._token_expires = token, time.monotonic() + max(0.0, expires - 30)
            self._secrets = [*self.config.secret_values(), token]
            return token

    # ------------------------------------------------------------------ the call
    def request(
        self,
        method: str,
        path: str,
        *,
        budget: Budget,
        record: Recorder | None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        check: bool = True,
        error_text: Any = None,
    ) -> HttpResponse:
        verb = str(method).upper()
        if verb not in METHODS:
            raise ConnectionCallError(self.name, f"method {method!r} is not one of {', '.join(METHODS)}", code="BAD")
        url = target_url(self.base_url, path, self.name)
        shown = unquote(urlsplit(url).path)
        rec = CallRecord(self.name, self.config.kind, verb, shown)
        started = time.perf_counter()
        try:
            timeout = budget.remaining(float(self.config.get("timeout")))
            if timeout <= 0:
                raise ConnectionCallError(self.name, "the run has no time left for this call", code="BUSY")
            with self.gate.slot(timeout):
                response = self._send(verb, url, params, json, data, headers, budget, rec)
            rec.status = response.status
            if check and response.status >= 400:
                detail = error_text(response) if error_text else _short_body(response)
                raise RemoteError(
                    self.name,
                    f"{verb} {shown} answered {response.status}{': ' + detail if detail else ''}",
                    status=response.status,
                )
            return response
        except ConnectionCallError as exc:
            rec.error = redact(str(exc), self._secrets)
            if self._secrets and any(s in str(exc) for s in self._secrets if len(s) >= 3):
                raise type(exc)(
                    self.name, redact(exc.reason, self._secrets), code=exc.code, status=exc.status
                ) from None
            raise
        finally:
            rec.duration_ms = (time.perf_counter() - started) * 1000
            if record is not None:
                record(rec)

    def _send(
        self,
        verb: str,
        url: str,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Mapping[str, Any] | str | bytes | None,
        headers: Mapping[str, str] | None,
        budget: Budget,
        rec: CallRecord,
    ) -> HttpResponse:
        keep = bool(self.config.get("log_bodies"))
        renewed = False
        hops = 0
        while True:
            timeout = budget.remaining(float(self.config.get("timeout")))
            if timeout <= 0:
                raise ConnectionUnreachable(self.name, "the run's time ran out waiting for the answer", code="TIMEOUT")
            request = self.client.build_request(
                verb,
                url,
                params=dict(params) if params else None,
                json=json,
                data=data if isinstance(data, Mapping) else None,
                content=data if isinstance(data, str | bytes) else None,
                headers=dict(headers) if headers else None,
                timeout=timeout,
            )
            if keep and request.content:
                rec.request_body = redact(clip(request.content), self._secrets)
            self._auth(request, timeout, renew=renewed)
            try:
                answer = self.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, "the server") from None
            try:
                if answer.status_code in (301, 302, 303, 307, 308) and "location" in answer.headers:
                    location = urljoin(url, answer.headers["location"])
                    if origin(location) != origin(self.base_url):
                        raise OriginRefused(
                            self.name, f"the server redirected to {_origin_text(location)}, another origin; refused"
                        )
                    hops += 1
                    if hops > MAX_REDIRECTS:
                        raise RemoteError(self.name, f"more than {MAX_REDIRECTS} redirects", status=answer.status_code)
                    url = location
                    if answer.status_code == 303:
                        verb, json, data = "GET", None, None
                    continue
                if answer.status_code == 401 and self.config.get("auth") == "oauth2" and not renewed:
                    renewed = True  # the cached token may have been revoked: fetch a fresh one once
                    continue
                body = self._read(answer, rec)
            finally:
                answer.close()
            if keep:
                rec.response_body = redact(clip(body), self._secrets)
            return HttpResponse(answer.status_code, dict(answer.headers), body, urlsplit(url).path)

    def _read(self, answer: httpx.Response, rec: CallRecord) -> bytes:
        cap = int(self.config.get("max_bytes"))
        declared = as_int(answer.headers.get("content-length", ""), maximum=None)
        if declared is not None and declared > cap:
            rec.bytes = declared
            raise ResponseTooLarge(self.name, f"the answer has {declared} bytes, more than the cap of {cap}")
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in answer.iter_bytes():
                size += len(chunk)
                if size > cap:
                    rec.bytes = size
                    raise ResponseTooLarge(self.name, f"the answer is larger than the cap of {cap} bytes")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "the server") from None
        rec.bytes = size
        return b"".join(chunks)

    def _transport_error(self, exc: httpx.HTTPError, what: str) -> ConnectionCallError:
        host = _origin_text(self.base_url)
        if isinstance(exc, httpx.TimeoutException):
            return ConnectionUnreachable(self.name, f"{what} at {host} did not answer in time", code="TIMEOUT")
        text = f"{exc!s} {exc.__cause__ or ''} {exc.__context__ or ''}"
        if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
            return ConnectionUnreachable(
                self.name,
                f"TLS with {host} failed: the certificate is not trusted; add the CA bundle that signed it "
                "to the connection (ca_bundle)",
                code="TLS",
            )
        return ConnectionUnreachable(self.name, f"{what} at {host} cannot be reached ({type(exc).__name__})")


def _short_body(response: HttpResponse) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:300]


class HttpApi:
    """`ctx.http(name)`: calls bound to one run (its budget and its journal)."""

    def __init__(self, engine: HttpEngine, budget: Budget, record: Recorder | None) -> None:
        self._engine = engine
        self._budget = budget
        self._record = record
        self.name = engine.name

    def request(self, method: str, path: str, **kwargs: Any) -> HttpResponse:
        return self._engine.request(method, path, budget=self._budget, record=self._record, **kwargs)

    def get(self, path: str, **kwargs: Any) -> HttpResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> HttpResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> HttpResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> HttpResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> HttpResponse:
        return self.request("DELETE", path, **kwargs)
