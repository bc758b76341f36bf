"""Installations in the database: tokens at rest, token refresh across callers, uninstall, sync."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from b24robots import Params, Router, String
from b24robots.cli import app as cli
from b24robots.errors import ConfigError, StoreError
from b24robots.robots.spec import RobotSpec
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installations import Installations, InstallGrant
from b24robots.store.portal_tokens import PortalTokens
from b24robots.testing.app_fixtures import RobotHarness

router = Router()


class In(Params):
    text = String("Text")


@router.robot("s.one", name="One", inputs=In)
def one() -> None: ...


@router.activity("s.two", name="Two")
def two() -> None: ...


def grant(member: str = "m" * 32, token: str = "apptoken") -> InstallGrant:
    return InstallGrant(
        member_id=member,
        domain="x.bitrix24.com",
        # long enough that random ciphertext never contains them by chance
        access_token="access-token-a1",
        refresh_token="refresh-token-r1",
        expires_at=time.time() + 60,
        application_token=token,
        client_endpoint="https://x.bitrix24.com/rest/",
        server_endpoint="https://oauth.bitrix.info/rest/",
    )


def test_tokens_are_encrypted_at_rest_and_app_token_is_hashed(db: Database, tmp_path: Path) -> None:
    # tokens as long as a portal's (an access token is ~70 characters: docs settings/oauth/index.md), so
    # that "absent from the stored bytes" means encrypted, not lucky
    access, refresh, app_token = secrets.token_hex(35), secrets.token_hex(35), secrets.token_hex(16)
    inst = Installations(db, Vault(b"k"))
    inst.install(replace(grant(token=app_token), access_token=access, refresh_token=refresh))
    from b24robots.store.models import InstallationRow

    with db.read() as s:
        row = s.query(InstallationRow).one()
        stored = (row.access_token_enc, row.refresh_token_enc, row.application_token_hash)
    # with the key the ciphertext gives the token back; with another key it gives nothing
    assert Vault(b"k").decrypt(stored[0]) == access and Vault(b"k").decrypt(stored[1]) == refresh
    for ciphertext in stored[:2]:
        with pytest.raises(ConfigError, match="cannot be decrypted"):
            Vault(b"another key").decrypt(ciphertext)
    # without the key the token bytes appear nowhere: not in the row, not in the database file
    for secret in (access, refresh, app_token):
        assert all(secret not in value for value in stored)
    if db.is_sqlite:
        files = b"".join(p.read_bytes() for p in tmp_path.glob("test.db*"))
        assert files and not any(secret.encode() in files for secret in (access, refresh, app_token))
    assert PortalTokens(db, Vault(b"k")).load("m" * 32).access_token == access
    assert inst.verify("m" * 32, app_token)[1] == "ok"
    assert inst.verify("m" * 32, "wrong")[1] == "mismatch"
    assert inst.verify("n" * 32, app_token)[1] == "unknown"


async def test_twenty_concurrent_callers_on_an_expired_token_refresh_once(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        h.sim.expire_tokens(h.portal)
        refreshes_before = h.svc.rest.refreshes
        results = await asyncio.gather(*(h.svc.rest.call(h.portal.member_id, "profile") for _ in range(20)))
        assert len(results) == 20 and all(r["ID"] for r in results)
        assert h.svc.rest.refreshes - refreshes_before == 1
        # the new pair was persisted, encrypted, with a bumped version
        assert h.svc.tokens.load(h.portal.member_id).version >= 2


async def test_sync_is_idempotent_and_follows_the_registry(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        member = h.portal.member_id
        assert sorted((r.code, r.is_robot) for r in h.portal.registrations.values()) == [
            ("s.one", True),
            ("s.two", False),
        ]
        second = await h.svc.syncer.sync(member)
        assert second.ok and second.changes == []
        # a stored robot appears, one is redeclared differently -> add + update on the next sync
        h.svc.register.save(RobotSpec(code="s.three", name="Three"), "def run(i, c):\n    return {}\n", author="t")
        h.svc.register.save(RobotSpec(code="s.one", name="One, stored"), "def run(i, c):\n    return {}\n", author="t")
        plan = await h.svc.syncer.sync(member, dry_run=True)
        assert sorted((c.action, c.code) for c in plan.changes) == [("add", "s.three"), ("update", "s.one")]
        assert "s.three" not in {r.code for r in h.portal.registrations.values()}  # dry run changed nothing
        report = await h.svc.syncer.sync(member)
        assert report.ok and len(report.changes) == 2
        assert (await h.svc.syncer.sync(member)).changes == []
        names = {r.code: r.name for r in h.portal.registrations.values()}
        assert "One, stored" in str(names["s.one"])


async def test_app_update_deletes_robots_and_we_register_them_again(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        await h.sim.update_app(h.app, h.portal)
        await h.svc.wait_syncs()
        assert sorted(r.code for r in h.portal.registrations.values()) == ["s.one", "s.two"]


async def test_uninstall_stops_all_calls_for_the_portal(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        await h.sim.start_robot(h.portal, "s.one", properties={"text": "queued before the uninstall"})
        await h.sim.uninstall_app(h.app, h.portal)
        (inv,) = h.svc.journal.recent()
        assert inv.state == "dead" and "uninstalled" in inv.error and not inv.owed
        inst = h.svc.installations.get(h.portal.member_id)
        assert inst.status == "uninstalled"
        before = len(h.sim.calls)
        with pytest.raises(StoreError, match="uninstalled"):
            await h.svc.rest.call(h.portal.member_id, "profile")
        assert len(h.sim.calls) == before


async def test_invalid_grant_marks_the_installation_for_reinstall(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        h.sim.expire_tokens(h.portal)
        h.sim.refresh_tokens.clear()  # every refresh token is now unknown to the OAuth server
        from b24robots.errors import InvalidGrant

        with pytest.raises(InvalidGrant, match="re-install"):
            await h.svc.rest.call(h.portal.member_id, "profile")
        inst = h.svc.installations.get(h.portal.member_id)
        assert inst.status == "needs_reinstall" and "re-install" in inst.status_message


async def test_cli_sync_dry_run_and_installations_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from b24robots.testing import PortalSimulator, SimulatorServer

    sim = PortalSimulator()
    with SimulatorServer(sim):
        async with RobotHarness(router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
            await h.install()
            h.svc.register.save(RobotSpec(code="s.four", name="Four"), "def run(i, c):\n    return {}\n", author="t")
            env = {
                "B24R_DATA_DIR": str(tmp_path),
                "B24R_SECRET_KEY": "test-secret-key",
                "B24R_ALLOW_HTTP_PORTALS": "true",
                "B24R_PUBLIC_URL": "http://robots.example.test",
                "B24R_CLIENT_ID": h.app.client_id,
                "B24R_CLIENT_SECRET": h.app.client_secret,
                "B24R_APP": "tests.test_installations_sync:router",
                "COLUMNS": "200",
            }
            for k, v in env.items():
                monkeypatch.setenv(k, v)
            runner = CliRunner()
            dry = await asyncio.to_thread(runner.invoke, cli, ["sync", "--dry-run"])
            assert dry.exit_code == 0, dry.output
            flat = " ".join(dry.output.split())
            assert "add" in flat and "s.four" in flat and "(dry run)" in flat
            assert "s.four" not in {r.code for r in h.portal.registrations.values()}
            real = await asyncio.to_thread(runner.invoke, cli, ["sync"])
            assert real.exit_code == 0, real.output
            assert "s.four" in {r.code for r in h.portal.registrations.values()}
            listed = await asyncio.to_thread(runner.invoke, cli, ["installations", "list"])
            assert listed.exit_code == 0 and h.portal.domain in listed.output and "ok" in listed.output
            assert h.svc.tokens.load(h.portal.member_id).access_token not in listed.output


async def test_plain_http_portals_are_refused_unless_allowed(tmp_path: Path) -> None:
    async with RobotHarness(
        router, data_dir=tmp_path, workers=False, sandbox=False, settings={"allow_http_portals": False}
    ) as h:
        await h.sim.install_app(h.app, h.portal)
        delivery = h.sim.deliveries[-1]
        # plain http reaches neither the portal nor the OAuth server: the simulator's is not trusted
        assert delivery.status_code == 400 and "B24R_OAUTH_SERVERS" in delivery.response_text
        assert h.svc.installations.all() == []
