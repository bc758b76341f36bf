"""The journal of syncs: every sync (after install, CLI, admin UI) records what it planned, made and skipped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from b24robots import Router
from b24robots.cli import app as cli
from b24robots.store.syncs import KEEP_PER_PORTAL, SyncLog
from b24robots.store.users import Users
from b24robots.testing import PortalSimulator, SimulatorServer
from b24robots.testing.app_fixtures import RobotHarness
from tests.ui_helpers import PASSWORD, sign_in

router = Router()


@router.robot("sj.robot", name="Robot")
def robot() -> None: ...


@router.activity("sj.activity", name="Activity")
def activity() -> None: ...


def _changes(entry_changes: list[dict[str, object]]) -> set[tuple[object, object, object]]:
    return {(c["action"], c["code"], c["done"]) for c in entry_changes}


async def test_install_cli_and_ui_syncs_are_journaled_and_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = PortalSimulator()
    with SimulatorServer(sim):
        async with RobotHarness(router, data_dir=tmp_path, sim=sim, sandbox=False) as h:
            # a plan without business processes: the activity cannot be registered (skip)
            h.sim.set_features({"crm_automation_deal"}, h.portal)
            await h.install()
            log = h.svc.syncer.sync_log
            assert log is not None
            (first,) = log.recent()
            assert first.origin == "install" and not first.dry_run and not first.error
            assert _changes(first.changes) == {("add", "sj.robot", True), ("skip", "sj.activity", False)}
            assert any("bizproc.activity" in w for w in first.warnings)

            env = {
                "B24R_DATA_DIR": str(tmp_path),
                "B24R_SECRET_KEY": "test-secret-key",
                "B24R_ALLOW_HTTP_PORTALS": "true",
                "B24R_PUBLIC_URL": "http://robots.example.test",
                "B24R_CLIENT_ID": h.app.client_id,
                "B24R_CLIENT_SECRET": h.app.client_secret,
                "B24R_APP": "tests.test_sync_journal:router",
                "COLUMNS": "200",
            }
            for k, v in env.items():
                monkeypatch.setenv(k, v)
            runner = CliRunner()
            dry = await asyncio.to_thread(runner.invoke, cli, ["sync", "--dry-run"])
            assert dry.exit_code == 0, dry.output
            real = await asyncio.to_thread(runner.invoke, cli, ["sync"])
            assert real.exit_code == 0, real.output
            entries = log.recent()
            # the CLI's dry run and its sync; the plan shown before the real sync is not a separate entry
            assert [(e.origin, e.dry_run) for e in entries] == [("cli", False), ("cli", True), ("install", False)]
            assert _changes(entries[0].changes) == {("skip", "sj.activity", False)}

            listed = await asyncio.to_thread(runner.invoke, cli, ["syncs", "list", "--changes"])
            assert listed.exit_code == 0, listed.output
            flat = " ".join(listed.output.split())
            assert h.portal.domain in flat and "install" in flat and "dry run" in flat
            assert "1 added, 0 updated, 0 deleted, 1 skipped" in flat and "skip activity sj.activity" in flat
            one = await asyncio.to_thread(
                runner.invoke, cli, ["syncs", "list", "--portal", h.portal.domain, "--limit", "1"]
            )
            assert one.exit_code == 0 and one.output.count(h.portal.domain) == 1
            bad = await asyncio.to_thread(runner.invoke, cli, ["syncs", "list", "--portal", "nowhere.example"])
            assert bad.exit_code == 2 and "no installation" in bad.output and "Traceback" not in bad.output

            Users(h.svc.db).create("anna", PASSWORD)
            async with h.client() as c:
                csrf = await sign_in(c)
                done = await c.post(f"/admin/portals/{h.portal.member_id}/sync", data={"csrf": csrf})
                assert done.status_code == 303
                page = await c.get("/admin/portals")
                assert page.status_code == 200 and 'id="syncs-table"' in page.text
                assert "admin UI" in page.text and "install or update" in page.text
                assert "<code>sj.activity</code>" in page.text
                ru = await c.get("/admin/portals", headers={"Accept-Language": "ru"})
                assert "Последние синхронизации" in ru.text and "панель администратора" in ru.text
            assert log.recent(limit=1)[0].origin == "ui"


async def test_old_entries_of_a_portal_are_dropped_beyond_the_limit(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        log = SyncLog(h.svc.db)
        inst = h.svc.installations.get(h.portal.member_id)
        for i in range(KEEP_PER_PORTAL + 5):
            log.record(inst.id, origin="api", started_at=4e9 + i, dry_run=False, error="", changes=[], warnings=[])
        kept = log.recent(inst.id, limit=1000)
        assert len(kept) == KEEP_PER_PORTAL
        assert kept[0].started_at == 4e9 + KEEP_PER_PORTAL + 4 and kept[-1].started_at == 4e9 + 5  # the newest stay
