"""RestClient against the project's portal simulator (b24robots.testing) over real ASGI HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from b24robots import errors
from b24robots.rest import (
    AppCredentials,
    MemoryLimiterState,
    MemoryTokenStore,
    RestClient,
    RetryPolicy,
    TokenPair,
)
from b24robots.testing import ManualClock, PortalSimulator, SimulatorServer

FAST = RetryPolicy(attempts=4, timeout=5.0, wait_initial=0.001, wait_max=0.002, wait_jitter=0.0)
KEY = "acme"


@dataclass
class World:
    sim: PortalSimulator
    clock: ManualClock
    store: MemoryTokenStore
    client: RestClient
    domain: str
    app_credentials: AppCredentials

    def statuses(self, method: str) -> list[int]:
        return [c.status for c in self.sim.calls if c.method == method]

    def new_client(self, **kw: Any) -> RestClient:
        options: dict[str, Any] = {
            "app": self.app_credentials,
            "transport": httpx.ASGITransport(app=self.sim.app),
            "allow_http": True,
            "clock": self.clock.now,
            "sleep": self.sleep,
            "retry": FAST,
        }
        options.update(kw)
        return RestClient(self.store, **options)

    async def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await asyncio.sleep(0)


def issued_pair(sim: PortalSimulator, app: Any, portal: Any) -> TokenPair:
    """What the client's token store holds after the simulator issued the app's tokens on `portal`."""
    pair = sim.issue_tokens(app, portal)
    return TokenPair(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_at=float(pair.expires),
        version=1,
        client_endpoint=sim.client_endpoint(portal),
        server_endpoint=sim.server_endpoint,
        domain=portal.domain,
        member_id=portal.member_id,
    )


async def _world(deals: int = 3, **sim_options: Any) -> World:
    clock = ManualClock()
    sim = PortalSimulator(clock=clock, **sim_options)
    portal = sim.add_portal("acme.bitrix24.test", deals=deals)
    app = sim.register_app("Robots")
    await sim.install_app(app, portal, notify=False)
    store = MemoryTokenStore()
    store.put(KEY, issued_pair(sim, app, portal))
    world = World(sim, clock, store, None, portal.domain, AppCredentials(app.client_id, app.client_secret))  # type: ignore[arg-type]
    world.client = world.new_client()
    return world


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = await _world()
    yield w
    await w.client.aclose()
    await w.sim.aclose()


async def test_call_and_errors_through_the_simulator(world: World) -> None:
    deal = await world.client.call(KEY, "crm.deal.get", {"id": 1})
    assert deal["TITLE"] == "Deal #1"
    with pytest.raises(errors.MethodNotFound) as info:
        await world.client.call(KEY, "no.such.method")
    assert info.value.portal == "acme.bitrix24.test" and info.value.status == 404
    with pytest.raises(errors.AccessDenied):
        await world.client.call(KEY, "bizproc.event.send", {"EVENT_TOKEN": "forged|A1|x.00"})


async def test_twenty_concurrent_callers_one_refresh(world: World) -> None:
    world.sim.expire_tokens()
    results = await asyncio.gather(*(world.client.call(KEY, "crm.deal.get", {"id": 1}) for _ in range(20)))
    assert all(r["ID"] == "1" for r in results)
    assert world.client.refreshes == 1
    assert world.store.load(KEY).version == 2
    assert world.store.needs_reinstall == {}


async def test_two_processes_refresh_race_cas(world: World) -> None:
    """Two clients (two processes) share the store; refresh tokens rotate, CAS settles the race."""
    other = world.new_client()
    world.sim.expire_tokens()
    calls = [c.call(KEY, "crm.deal.get", {"id": 2}) for c in (world.client, other) for _ in range(10)]
    results = await asyncio.gather(*calls)
    assert len(results) == 20 and all(r["ID"] == "2" for r in results)
    assert world.client.refreshes + other.refreshes == 1
    assert world.store.load(KEY).version == 2
    assert world.store.needs_reinstall == {}
    await other.aclose()


async def test_invalid_grant_needs_reinstall(world: World) -> None:
    # the stored refresh token is spent elsewhere (refresh tokens rotate), then the access token expires
    status, _ = world.sim.oauth_token(
        {
            "grant_type": "refresh_token",
            "client_id": world.app_credentials.client_id,
            "client_secret": world.app_credentials.client_secret,
            "refresh_token": world.store.load(KEY).refresh_token,
        }
    )
    assert status == 200
    world.sim.expire_tokens()
    with pytest.raises(errors.InvalidGrant) as info:
        await world.client.call(KEY, "crm.deal.get", {"id": 1})
    assert "re-install" in str(info.value)
    assert "re-install" in world.store.needs_reinstall[KEY]


async def test_sixty_seconds_at_two_per_second_zero_503(world: World) -> None:
    start = world.clock.now()
    for _ in range(170):  # 50 burst + 120 at 2/s
        await world.client.call(KEY, "crm.deal.get", {"id": 1})
    assert world.clock.now() - start == pytest.approx(60, abs=1)
    assert world.statuses("crm.deal.get").count(503) == 0
    assert len(world.statuses("crm.deal.get")) == 170


async def test_full_burst_at_once_zero_503(world: World) -> None:
    await asyncio.gather(*(world.client.call(KEY, "profile") for _ in range(50)))
    assert world.statuses("profile") == [200] * 50


@pytest.mark.parametrize("shared", [True, False])
async def test_two_clients_sharing_limiter_state(world: World, shared: bool) -> None:
    """Two clients (processes) alternate calls: with one shared state the portal never refuses."""
    state = MemoryLimiterState()
    a = world.new_client(limiter=state)
    b = world.new_client(limiter=state if shared else MemoryLimiterState())
    for _ in range(60):
        await a.call(KEY, "profile")
        await b.call(KEY, "profile")
    refused = world.statuses("profile").count(503)
    assert world.statuses("profile").count(200) == 120
    if shared:
        assert refused == 0
    else:
        assert refused > 0  # separate buckets overfill the portal's (then retries recover)
    await a.aclose()
    await b.aclose()


async def test_full_bucket_503_is_retried_after_a_leak(world: World) -> None:
    world.sim.fill_bucket()
    deal = await world.client.call(KEY, "crm.deal.add", {"fields": {"TITLE": "x"}})
    assert isinstance(deal, int)
    assert world.statuses("crm.deal.add") == [503, 200]


async def test_injected_query_limit_retried_for_writes(world: World) -> None:
    world.sim.faults.fail_next(2, status=503, error="QUERY_LIMIT_EXCEEDED", description="Too many requests")
    await world.client.call(KEY, "crm.deal.update", {"id": 1, "fields": {"TITLE": "y"}})
    assert world.statuses("crm.deal.update") == [503, 503, 200]
    assert (await world.client.call(KEY, "crm.deal.get", {"id": 1}))["TITLE"] == "y"


async def test_server_error_retried_only_for_reads(world: World) -> None:
    world.sim.faults.fail_next(1, method="crm.deal.get")
    assert (await world.client.call(KEY, "crm.deal.get", {"id": 1}))["ID"] == "1"
    assert world.statuses("crm.deal.get") == [500, 200]
    world.sim.faults.fail_next(1, method="crm.deal.add")
    with pytest.raises(errors.ServerError):
        await world.client.call(KEY, "crm.deal.add", {"fields": {"TITLE": "z"}})
    assert world.statuses("crm.deal.add") == [500]


async def test_dropped_connection_retried_only_for_idempotent(world: World) -> None:
    world.sim.faults.drop_next(1, method="crm.deal.list")
    assert len(await world.client.call(KEY, "crm.deal.list")) == 3
    world.sim.faults.drop_next(1, method="crm.deal.update")
    with pytest.raises(errors.TransportError):
        await world.client.call(KEY, "crm.deal.update", {"id": 1, "fields": {"TITLE": "w"}})
    assert [c.status for c in world.sim.calls if c.method == "crm.deal.update"] == [0]


async def test_operation_time_limit_wait_or_raise() -> None:
    w = await _world(operating_time_limit=1.0, method_costs={"crm.deal.add": 2.0})
    await w.client.call(KEY, "crm.deal.add", {"fields": {"TITLE": "a"}})
    with pytest.raises(errors.OperationTimeLimit) as info:  # reset is ~600 s away: beyond the cap
        await w.client.call(KEY, "crm.deal.add", {"fields": {"TITLE": "b"}})
    assert info.value.reset_at is not None and info.value.reset_at - w.clock.now() > 500
    patient = w.new_client(retry=RetryPolicy(attempts=2, wait_initial=0.001, max_operation_wait=700))
    before = w.clock.now()
    await patient.call(KEY, "crm.deal.add", {"fields": {"TITLE": "c"}})
    assert w.clock.now() - before == pytest.approx(info.value.reset_at - before, abs=1)
    assert w.statuses("crm.deal.add") == [200, 429, 429, 200]
    await patient.aclose()
    await w.client.aclose()
    await w.sim.aclose()


async def test_batch_of_120_is_three_requests_split_back() -> None:
    w = await _world(deals=130)
    commands = {f"d{i}": ("crm.deal.get", {"id": i}) for i in range(1, 120)}
    commands["missing"] = ("crm.deal.get", {"id": 999_999})
    result = await w.client.batch(KEY, commands)
    assert result.requests == 3
    assert w.statuses("batch") == [200, 200, 200]
    for i in range(1, 120):
        assert result[f"d{i}"]["ID"] == str(i)
    with pytest.raises(errors.MethodError) as info:
        result.result("missing")
    assert info.value.method == "crm.deal.get" and info.value.portal == "acme.bitrix24.test"
    await w.client.aclose()
    await w.sim.aclose()


async def test_list_all_pages_through_the_simulator() -> None:
    w = await _world(deals=120)
    ids = [d["ID"] async for d in w.client.list_all(KEY, "crm.deal.list", {"select": ["ID"]})]
    assert ids == [str(i) for i in range(1, 121)]
    assert w.statuses("crm.deal.list") == [200, 200, 200]
    await w.client.aclose()
    await w.sim.aclose()


async def test_over_a_real_socket() -> None:
    """The same client over real HTTP: the simulator served by uvicorn on 127.0.0.1."""
    w = await _world()
    with SimulatorServer(w.sim) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        stale = w.store.load(KEY)
        w.store.put(
            KEY,
            replace(
                stale,
                client_endpoint=w.sim.client_endpoint(w.domain),
                server_endpoint=w.sim.server_endpoint,
            ),
        )
        client = w.new_client(transport=None)
        w.sim.expire_tokens()
        deals = [d async for d in client.list_all(KEY, "crm.deal.list")]
        assert [d["ID"] for d in deals] == ["1", "2", "3"]
        assert client.refreshes == 1
        assert w.store.load(KEY).client_endpoint.startswith(server.base_url)
        await client.aclose()
    await w.client.aclose()
    await w.sim.aclose()
