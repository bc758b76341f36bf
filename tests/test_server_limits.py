"""The server as `b24robots serve` runs it (uvicorn with our configuration, on a real port): proxy
headers believed only from trusted proxies, slow clients cut off, connections per address capped, with
either HTTP protocol (httptools, the default, and h11); what start-up built is frozen for the garbage
collector."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from b24robots.config import Settings
from b24robots.store.users import FREE_FAILURES, Users
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.web.server import ServerConfig, server_config
from tests.ui_helpers import PASSWORD, csrf_of

SRC = Path(__file__).resolve().parent.parent / "src"


@asynccontextmanager
async def served(
    tmp_path: Path, http: str = "auto", **settings: Any
) -> AsyncIterator[tuple[RobotHarness, ServerConfig, str]]:
    """The harness's app under uvicorn, configured from its settings exactly as `serve` does."""
    async with RobotHarness(data_dir=tmp_path, sandbox=False, settings=settings) as h:
        Users(h.svc.db).create("anna", PASSWORD)
        config = server_config(h.asgi, h.svc.settings, host="127.0.0.1", port=0, http=http, lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield h, config, f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task


def test_settings_pass_the_trusted_proxies_to_uvicorn() -> None:
    plain = server_config(object(), Settings(), host="127.0.0.1", port=1)
    assert plain.proxy_headers is False  # uvicorn alone would believe X-Forwarded-For from loopback
    trusted = server_config(object(), Settings(trusted_proxies="10.0.0.5, 10.1.0.0/16"), host="127.0.0.1", port=1)
    assert trusted.proxy_headers is True and trusted.forwarded_allow_ips == "10.0.0.5,10.1.0.0/16"
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(trusted_proxies="proxy.example.com")


def test_serve_parses_http_with_httptools_and_writes_no_access_lines() -> None:
    config = server_config(object(), Settings(), host="127.0.0.1", port=1)
    assert config.http.__name__ == "GuardedHttpToolsProtocol"  # type: ignore[union-attr]
    assert config.access_log is False and config.loop == "auto"  # auto: uvloop where it is installed
    assert server_config(object(), Settings(), host="127.0.0.1", port=1, http="h11").http.__name__ == (  # type: ignore[union-attr]
        "GuardedH11Protocol"
    )
    with pytest.raises(ValueError, match="unknown HTTP protocol"):
        server_config(object(), Settings(), host="127.0.0.1", port=1, http="h2")


PROTOCOLS = pytest.mark.parametrize("http", ["httptools", "h11"])


async def login_codes(base: str, forwarded: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=base) as c:
        token = csrf_of((await c.get("/admin/login")).text)
        codes = []
        for address in forwarded:
            form = {"csrf": token, "username": "anna", "password": "wrong-guess"}
            resp = await c.post("/admin/login", data=form, headers={"X-Forwarded-For": address})
            codes.append(resp.status_code)
        return codes


async def test_rotating_x_forwarded_for_does_not_buy_more_guesses(tmp_path: Path) -> None:
    async with served(tmp_path) as (h, _, base):
        codes = await login_codes(base, [f"203.0.113.{i}" for i in range(12)])
    assert codes.count(401) == FREE_FAILURES and codes.count(429) == 12 - FREE_FAILURES
    addresses = {e.address for e in h.svc.audit.recent(action="sign_in.failed")}
    assert addresses == {"127.0.0.1"}


async def test_a_trusted_proxy_passes_on_the_clients_address(tmp_path: Path) -> None:
    async with served(tmp_path, trusted_proxies="127.0.0.1") as (h, _, base):
        codes = await login_codes(base, ["198.51.100.7", "198.51.100.8"])
    assert codes == [401, 401]
    assert {e.address for e in h.svc.audit.recent(action="sign_in.failed")} == {"198.51.100.7", "198.51.100.8"}


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Return once `predicate()` holds; fail after `timeout` s (the server counts on its own loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before it closed the connection; fails when it is still open after `seconds`."""
    return await asyncio.wait_for(reader.read(), timeout=seconds)


@PROTOCOLS
async def test_slow_clients_are_cut_off_while_normal_requests_stay_fast(tmp_path: Path, http: str) -> None:
    settings = {"header_timeout": 1.0, "body_timeout": 1.0, "max_connections_per_address": 200}
    async with served(tmp_path, http, **settings) as (_, config, base):
        port = int(base.rsplit(":", 1)[1])
        slow = []
        for i in range(60):  # half trickle headers that never end, half promise a body they never send
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if i % 2:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:
                writer.write(b"POST /b24/robot HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\ncode=")
            await writer.drain()
            slow.append((reader, writer))
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=base) as c:
            took = []
            for _ in range(10):
                t0 = time.monotonic()
                assert (await c.get("/healthz")).status_code == 200
                took.append(time.monotonic() - t0)
        assert max(took) < 0.5, took  # the held sockets cost the others nothing
        answers = await asyncio.gather(*(closed_within(r, 5.0) for r, _ in slow))
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, elapsed  # cut off at the deadline (1 s), not held for ever
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        assert config.guard.timed_out == 60 and not config.guard.open
        for _, writer in slow:
            writer.close()


@PROTOCOLS
async def test_connections_per_address_are_capped(tmp_path: Path, http: str) -> None:
    async with served(tmp_path, http, max_connections_per_address=5) as (_, config, base):
        port = int(base.rsplit(":", 1)[1])
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        await until(lambda: config.guard.open["127.0.0.1"] == 5)  # the server has counted all five
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await closed_within(reader, 2.0)
        assert refused.startswith(b"HTTP/1.1 503")
        writer.close()
        for _, w in held:
            w.close()
        await until(lambda: not config.guard.open)  # the held ones are gone: the address may connect again
        async with httpx.AsyncClient(base_url=base) as c:
            assert (await c.get("/healthz")).status_code == 200


@PROTOCOLS
async def test_a_kept_alive_connection_gets_the_header_deadline_again(tmp_path: Path, http: str) -> None:
    async with served(tmp_path, http, header_timeout=1.0, body_timeout=1.0) as (_, config, base):
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        first = await reader.readuntil(b'"status":"ok"}')
        assert first.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1.5)  # idle between requests is the keep-alive timeout's (5 s), not a deadline
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # the next request never ends its headers
        await writer.drain()
        started = time.monotonic()
        assert (await closed_within(reader, 5.0)).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 3.0
        assert config.guard.timed_out == 1
        writer.close()


def test_once_serve_has_started_the_garbage_collector_no_longer_scans_what_startup_built() -> None:
    """`serve` freezes the objects alive after start-up (modules, classes, the app, its services), so a full
    collection does not scan them with every request waiting (about 100 ms). A real `Server` in its own
    process, since a freeze would outlive this test in the test process."""
    script = textwrap.dedent(
        """
        import asyncio, gc
        from b24robots.config import Settings
        from b24robots.web.server import Server, server_config

        async def app(scope, receive, send):
            while scope["type"] == "lifespan":
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        async def main():
            server = Server(server_config(app, Settings(), host="127.0.0.1", port=0, lifespan="on"))
            before = gc.get_freeze_count()
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            print(before, gc.get_freeze_count(), flush=True)
            server.should_exit = True
            await task

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert before == 0 and after > 10_000, done.stdout
