"""Real servers for connection tests: an echo/fault HTTP app, a test CA, and helpers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from b24robots.connections.base import CallRecord
from b24robots.connections.config import ConnectionConfig, merge, normalize
from b24robots.testing import LocalServer

SECRET = "s3cr3t-Value-9f8e7d"


class Echo:
    """State of the echo app: what it saw, how many requests ran at once."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.token_calls = 0
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()


def echo_app(state: Echo) -> Starlette:
    async def echo(request: Request) -> Response:
        body = (await request.body()).decode()
        seen = {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
        }
        state.seen.append(seen)
        return JSONResponse(seen)

    async def status(request: Request) -> Response:
        state.seen.append(
            {"path": request.url.path, "query": dict(request.query_params), "headers": dict(request.headers)}
        )
        return Response(f"far side says {request.path_params['n']}", status_code=int(request.path_params["n"]))

    async def big(request: Request) -> Response:
        n = int(request.query_params.get("n", "1000"))

        async def chunks() -> Any:
            for _ in range(n // 1000):
                yield b"x" * 1000

        return StreamingResponse(chunks())

    async def big_declared(request: Request) -> Response:
        return Response(b"y" * int(request.query_params.get("n", "1000")))

    async def slow(request: Request) -> Response:
        with state.lock:
            state.active += 1
            state.max_active = max(state.max_active, state.active)
        try:
            await asyncio.sleep(float(request.query_params.get("s", "0.2")))
        finally:
            with state.lock:
                state.active -= 1
        return JSONResponse({"slept": True})

    async def redirect(request: Request) -> Response:
        return Response(status_code=302, headers={"location": request.query_params["to"]})

    async def token(request: Request) -> Response:
        form = await request.form()
        state.token_calls += 1
        if form.get("client_secret") != SECRET or form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse({"access_token": f"tok-{state.token_calls}-{SECRET[:4]}x", "expires_in": 3600})

    async def protected(request: Request) -> Response:
        if not request.headers.get("authorization", "").startswith("Bearer tok-"):
            return Response(status_code=401)
        return JSONResponse({"ok": True, "auth": request.headers["authorization"]})

    async def quiet(request: Request) -> Response:
        # like echo, but answers without repeating the request (its credentials) back
        state.seen.append({"path": request.url.path, "headers": {k.lower(): v for k, v in request.headers.items()}})
        return JSONResponse({"n": len(state.seen), "q": dict(request.query_params)}, headers={"X-Far": "side"})

    async def reflect(request: Request) -> Response:
        # a far side that repeats the caller's credentials in its error answer (some do)
        auth = request.headers.get("authorization", "")
        return JSONResponse({"error": "bad request", "auth": auth, "q": dict(request.query_params)}, status_code=400)

    return Starlette(
        routes=[
            Route("/api/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/api/quiet", quiet, methods=["GET", "POST"]),
            Route("/api/reflect", reflect),
            Route("/api/status/{n}", status),
            Route("/api/big", big),
            Route("/api/big-declared", big_declared),
            Route("/api/slow", slow),
            Route("/api/redirect", redirect),
            Route("/oauth/token", token, methods=["POST"]),
            Route("/api/protected", protected),
            Route("/", echo),
        ]
    )


@contextmanager
def echo_server(**tls: str) -> Iterator[tuple[LocalServer, Echo]]:
    state = Echo()
    with LocalServer(echo_app(state), **tls) as server:  # type: ignore[arg-type]
        yield server, state


def config(kind: str, name: str = "erp", secrets: dict[str, Any] | None = None, **settings: Any) -> ConnectionConfig:
    clean, clean_secrets = normalize(kind, settings, secrets or {})
    return merge(name, kind, [(clean, clean_secrets, time.time())])


class MemorySource:
    """A ConnectionSource over a dict, for tests of the hub without a database."""

    def __init__(self, *configs: ConnectionConfig) -> None:
        self.configs = {c.name: c for c in configs}
        self.records: list[tuple[int | None, CallRecord]] = []

    def resolve(self, name: str, member_id: str) -> ConnectionConfig | None:
        return self.configs.get(name)

    def record_calls(self, invocation_id: int | None, records: Sequence[CallRecord]) -> None:
        self.records += [(invocation_id, r) for r in records]


def make_ca(tmp: Path) -> tuple[str, str, str]:
    """A test CA and a server certificate for 127.0.0.1: (ca PEM text, cert file, key file)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "b24robots test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "server.pem", tmp / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca.public_bytes(serialization.Encoding.PEM).decode(), str(cert_file), str(key_file)


def dumps(records: Sequence[CallRecord]) -> str:
    return json.dumps([r.as_dict() for r in records], ensure_ascii=False)
