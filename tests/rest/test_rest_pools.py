"""The REST client's connections: one small pool per portal's origin, over real sockets (two HTTP/1.1
servers on loopback, each a different origin), with keep-alive seen from the server's side."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from b24robots.rest import RestClient
from b24robots.rest.pools import SWEEP_EVERY, OriginPools
from b24robots.rest.tokens import MemoryTokenStore


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        self.server.peers.append(self.client_address[1])  # type: ignore[attr-defined]
        body = b"x" * 10
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origins() -> Iterator[list[tuple[str, list[int]]]]:
    servers = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.peers = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [(f"http://127.0.0.1:{s.server_address[1]}/", s.peers) for s in servers]  # type: ignore[attr-defined]
    for s in servers:
        s.shutdown()
        s.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_each_origin_gets_its_own_pool_and_keeps_its_connection(origins: list[tuple[str, list[int]]]) -> None:
    pools = OriginPools()
    async with httpx.AsyncClient(transport=pools) as http:
        for _ in range(3):
            for url, _peers in origins:
                assert (await http.get(url)).content == b"x" * 10
        assert pools.origins == 2
    for _url, peers in origins:
        assert len(peers) == 3 and len(set(peers)) == 1  # three requests, one connection (kept alive)
    assert pools.origins == 0  # the client's close closed every pool


async def test_a_pool_idle_past_its_keepalive_is_closed_and_one_in_use_is_not(
    origins: list[tuple[str, list[int]]],
) -> None:
    clock = Clock()
    pools = OriginPools(keepalive=30.0, clock=clock)
    (idle_url, idle_peers), (busy_url, _busy_peers) = origins
    async with httpx.AsyncClient(transport=pools) as http:
        await http.get(idle_url)
        async with http.stream("GET", busy_url) as open_response:  # a response not yet closed: in flight
            clock.now += max(SWEEP_EVERY, 30.0) + 1
            await http.get(idle_url)  # the sweep runs first: the idle pool goes, the busy one stays
            assert pools.origins == 2  # the busy origin, and the idle one opened again
            await open_response.aread()
        clock.now += max(SWEEP_EVERY, 30.0) + 1
        await http.get(idle_url)
        assert pools.origins == 1  # both were idle that long: both closed, the requested one opened again
    assert len(set(idle_peers)) == 3  # each closed pool's connection was closed; a new one followed


async def test_the_rest_client_uses_pools_per_origin_unless_a_proxy_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = RestClient(MemoryTokenStore())
    assert isinstance(client._transport.http._transport, OriginPools)
    await client.aclose()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    client = RestClient(MemoryTokenStore())
    assert not isinstance(client._transport.http._transport, OriginPools)  # httpx routes through the proxy
    await client.aclose()


async def test_portals_of_a_served_simulator_each_have_an_origin_and_a_pool() -> None:
    """SimulatorServer(addresses=3): three portals on 127.0.0.1-3 (one port), answered over real sockets;
    the client keeps one pool per portal."""
    from test_rest_simulator import issued_pair

    from b24robots.testing import PortalSimulator, SimulatorServer

    sim = PortalSimulator()
    store = MemoryTokenStore()
    with SimulatorServer(sim, addresses=3) as server:
        app = sim.register_app("Robots")
        portals = [sim.add_portal(deals=1) for _ in range(3)]
        for portal in portals:
            await sim.install_app(app, portal, notify=False)
            store.put(portal.domain, issued_pair(sim, app, portal))
        endpoints = [sim.client_endpoint(p) for p in portals]
        assert endpoints == [f"http://127.0.0.{n}:{server.port}/rest/" for n in (1, 2, 3)]
        client = RestClient(store, allow_http=True)
        try:
            for portal in portals:
                assert (await client.call(portal.domain, "crm.deal.get", {"id": 1}))["ID"] == "1"
            pools = client._transport.http._transport
            assert isinstance(pools, OriginPools) and pools.origins == 3
        finally:
            await client.aclose()
    assert sim.portal_addresses == []  # stopped: endpoints are the base URL's again
    await sim.aclose()
