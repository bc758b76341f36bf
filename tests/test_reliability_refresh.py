"""Token refresh under faults: one refresh per portal across processes, `needs_reinstall` only when
the refused pair is still the stored one, cleared when a valid pair is stored."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from b24robots.errors import StoreError
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installation_rows import ACTIVE, NEEDS_REINSTALL
from b24robots.store.installations import Installations, InstallGrant
from b24robots.store.portal_tokens import PortalTokens
from b24robots.testing import PortalSimulator
from b24robots.testing.app_fixtures import RobotHarness
from tests.conftest import new_pg_database
from tests.proc_robots import router
from tests.processes import served_sim, start_workers, stop, wait_for

__all__ = ["served_sim"]

MEMBER = "m" * 32


def grant() -> InstallGrant:
    return InstallGrant(
        member_id=MEMBER,
        domain="x.bitrix24.com",
        access_token="access-token-a1",
        refresh_token="refresh-token-r1",
        expires_at=time.time() + 60,
        application_token="apptoken",
        client_endpoint="https://x.bitrix24.com/rest/",
        server_endpoint="https://oauth.bitrix.info/rest/",
    )


def test_a_refused_refresh_marks_needs_reinstall_only_for_the_pair_it_tried(db: Database) -> None:
    inst, tokens = Installations(db, Vault(b"k")), PortalTokens(db, Vault(b"k"))
    inst.install(grant())
    old = tokens.load(MEMBER)
    assert tokens.swap(MEMBER, old.version, replace(old, access_token="access-2", version=old.version + 1))
    # the loser of a race reports invalid_grant for the pair it had: the winner's pair stands
    assert not tokens.mark_needs_reinstall(MEMBER, "refused", old.version)
    assert inst.get(MEMBER).status == ACTIVE and tokens.load(MEMBER).access_token == "access-2"
    current = tokens.load(MEMBER)
    assert tokens.mark_needs_reinstall(MEMBER, "refused", current.version)
    assert inst.get(MEMBER).status == NEEDS_REINSTALL
    with pytest.raises(StoreError, match="re-installed"):
        tokens.load(MEMBER)
    # a valid pair stored afterwards (a slow winner) ends the mark
    assert tokens.swap(MEMBER, current.version, replace(current, access_token="access-3", version=current.version + 1))
    assert inst.get(MEMBER).status == ACTIVE and inst.get(MEMBER).status_message == ""
    assert tokens.load(MEMBER).access_token == "access-3"


def test_the_refresh_claim_has_one_holder_until_it_lapses(db: Database) -> None:
    Installations(db, Vault(b"k")).install(grant())
    a, b = PortalTokens(db, Vault(b"k")), PortalTokens(db, Vault(b"k"))  # two processes
    v = a.load(MEMBER).version
    assert a.claim_refresh(MEMBER, v, "p1", 1000.0, 30.0)
    assert not b.claim_refresh(MEMBER, v, "p2", 1010.0, 30.0)
    assert a.claim_refresh(MEMBER, v, "p1", 1010.0, 30.0)  # the holder may renew
    assert not b.claim_refresh(MEMBER, v + 1, "p2", 1050.0, 30.0)  # not a version that is stored
    assert b.claim_refresh(MEMBER, v, "p2", 1050.0, 30.0)  # p1's claim lapsed (it died)
    b.release_refresh(MEMBER, "p1")  # not p1's any more: nothing changes
    assert not a.claim_refresh(MEMBER, v, "p1", 1051.0, 30.0)
    b.release_refresh(MEMBER, "p2")
    assert a.claim_refresh(MEMBER, v, "p1", 1052.0, 30.0)
    pair = a.load(MEMBER)
    assert a.swap(MEMBER, v, replace(pair, version=v + 1))  # storing the pair ends the claim
    assert b.claim_refresh(MEMBER, v + 1, "p2", 1053.0, 30.0)


@pytest.mark.postgres
async def test_two_worker_processes_and_a_slow_oauth_server_refresh_each_portal_once(
    served_sim: PortalSimulator,
    tmp_path: Path,
    pg_server,  # type: ignore[no-untyped-def]
    pg_template: str,
) -> None:
    db_url = new_pg_database(pg_server, pg_template)
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        portals = [h.portal, served_sim.add_portal(), served_sim.add_portal()]
        for p in portals[1:]:
            await served_sim.install_app(h.app, p)
        await h.install()
        served_sim.oauth_requests.clear()
        served_sim.faults.delay_oauth(1.5)
        # both are up before the work arrives (on a loaded machine the later one could start after the
        # first had taken every call, and nothing would race)
        workers = await start_workers(h, db_url, tmp_path, 2)
        workflows = []
        try:
            served_sim.expire_tokens()  # every portal's access token: the first answer of each needs a refresh
            workflows = [await served_sim.start_robot(p, "p.quick") for p in portals for _ in range(50)]
            await asyncio.gather(*(wf.closed(timeout=90) for wf in workflows))
            await wait_for(lambda: all(i.state == "delivered" for i in h.svc.journal.recent(limit=500)), 30)
        finally:
            for w in workers:
                stop(w)
        assert all(wf.closed_by == "event" for wf in workflows), "every answer was delivered"
        assert served_sim.oauth_requests == [("refresh_token", 200)] * len(portals), "one refresh per portal"
        assert {i.status for i in h.svc.installations.all()} == {ACTIVE}
        assert {str(wf.return_values["pid"]) for wf in workflows} == {str(w.pid) for w in workers}


async def test_a_refresher_that_died_holding_the_claim_is_taken_over_when_it_lapses(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        member = h.portal.member_id
        pair = h.svc.tokens.load(member)
        # another process took the claim and was killed before it stored anything
        assert h.svc.tokens.claim_refresh(member, pair.version, "refresh:dead", time.time(), 1.0)
        h.sim.expire_tokens(h.portal)
        h.sim.oauth_requests.clear()
        started = time.monotonic()
        assert (await h.svc.rest.call(member, "profile"))["ID"]
        assert time.monotonic() - started >= 0.9  # waited for the claim to lapse, then refreshed itself
        assert h.sim.oauth_requests == [("refresh_token", 200)]
        assert h.svc.tokens.load(member).version == pair.version + 1
