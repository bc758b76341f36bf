"""Fixtures for the simulator tests: a recording receiver app, a simulator wired to it, helpers."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from b24robots.inbound.formcodec import decode_form
from b24robots.testing import ManualClock, Portal, PortalSimulator, SimApp, TokenPair


@dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, Any]:
        return decode_form(self.body)


@dataclass
class Receiver:
    """An ASGI app standing in for the application: records every POST, answers 200 (or ``status``)."""

    received: list[Received] = field(default_factory=list)
    status: int = 200
    on_robot: Callable[[Received], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        async def endpoint(request: Request) -> Response:
            item = Received(request.url.path, request.url.query, dict(request.headers), await request.body())
            self.received.append(item)
            if self.on_robot is not None and request.url.path == "/robot":
                await self.on_robot(item)
            return JSONResponse({"status": "queued"}, status_code=self.status)

        self.app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])])

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(receiver: Receiver, clock: ManualClock) -> PortalSimulator:
    return PortalSimulator(clock=clock, handler_transport=httpx.ASGITransport(app=receiver.app))


@dataclass
class Env:
    """One portal with one installed API-only app and helpers to call REST in-process."""

    sim: PortalSimulator
    portal: Portal
    app: SimApp
    admin: TokenPair
    user: TokenPair
    client: httpx.AsyncClient

    async def rest(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        form: bool = False,
    ) -> httpx.Response:
        """POST ``method`` with the admin token (or ``token``) as JSON, or as a PHP-style form."""
        body = dict(params or {})
        body["auth"] = token if token is not None else self.admin.access_token
        if form:
            from b24robots.inbound.formcodec import encode_form

            return await self.client.post(
                f"/rest/{method}",
                content=encode_form(body),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        return await self.client.post(f"/rest/{method}", json=body)

    async def ok(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        response = await self.rest(method, params, **kw)
        assert response.status_code == 200, response.text
        return response.json()["result"]


ROBOT = {
    "CODE": "send_sms",
    "HANDLER": "https://app.example.test/robot",
    "AUTH_USER_ID": 1,
    "USE_SUBSCRIPTION": "Y",
    "NAME": {"en": "Send SMS", "de": "SMS senden"},
    "PROPERTIES": {
        "phone": {"Name": "Phone", "Type": "string", "Required": "Y"},
        "to": {"Name": "Recipient", "Type": "user"},
        "channel": {
            "Name": "Channel",
            "Type": "select",
            "Options": {"sms": "SMS", "wa": "WhatsApp"},
            "Default": "sms",
        },
    },
    "RETURN_PROPERTIES": {
        "message_id": {"Name": "Message id", "Type": "string"},
        "ok": {"Name": "OK", "Type": "bool", "Default": "N"},
        "count": {"Name": "Count", "Type": "int"},
    },
}


def robot_params(**changes: Any) -> dict[str, Any]:
    """The ROBOT registration with keys replaced (``None`` removes a key)."""
    data = copy.deepcopy(ROBOT)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.fixture
def robot() -> Callable[..., dict[str, Any]]:
    return robot_params


@pytest.fixture
async def env(sim: PortalSimulator) -> Any:
    portal = sim.add_portal()
    app = sim.register_app("Robots", install_url="https://app.example.test/install", api_only=True)
    await sim.install_app(app, portal, notify=False)
    admin = sim.issue_tokens(app, portal, 1)
    user = sim.issue_tokens(app, portal, 2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=sim.base_url) as client:
        yield Env(sim, portal, app, admin, user, client)


# ---------------------------------------------------------------------- HTTPS intercepting proxy
# b24pysdk builds https://<domain>/rest/... and https://oauth.bitrix24.tech/... itself. Pointing it at
# the simulator uses only standard `requests` configuration: HTTPS_PROXY routes CONNECTs here, and
# REQUESTS_CA_BUNDLE trusts the test CA whose certificate this proxy presents for those names.


def _write_certs(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "b24robots test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


class InterceptProxy:
    """CONNECT proxy on 127.0.0.1 that terminates TLS for ``names`` and forwards to the simulator."""

    def __init__(self, directory: Path, names: list[str], target_port: int) -> None:
        self.names = set(names)
        self.target_port = target_port
        self.ca_path, cert, key = _write_certs(directory, names)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.port = 0
        self.connects: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            verb, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            host = target.rsplit(":", 1)[0]
            self.connects.append(host)
            if verb != "CONNECT" or host not in self.names:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await writer.start_tls(self.context)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while chunk := await src.read(65536):
                        dst.write(chunk)
                        await dst.drain()
                finally:
                    if not dst.is_closing():
                        dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            writer.close()

    def __enter__(self) -> InterceptProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def intercept_proxy_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., InterceptProxy]]:
    proxies: list[InterceptProxy] = []

    def make(names: list[str], target_port: int) -> InterceptProxy:
        proxy = InterceptProxy(tmp_path, names, target_port).__enter__()
        proxies.append(proxy)
        for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(proxy.ca_path))
        return proxy

    yield make
    for proxy in proxies:
        proxy.__exit__()
