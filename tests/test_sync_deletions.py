"""Sync deletes only what this server registered and no longer declares on purpose, and asks first.

Through the real CLI (typer's runner) against the portal simulator served over HTTP, and through
the Syncer the admin UI and the background syncs use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from b24robots import Router
from b24robots.cli import app as cli
from b24robots.cli import ops
from b24robots.jobs.sync import NO_APP, NOT_OURS, UNCONFIRMED
from b24robots.testing import PortalSimulator, SimulatorServer
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.testing.model import Registration

router = Router()


@router.robot("d.keep", name="Keep")
def keep() -> None: ...


@router.robot("d.gone", name="Gone")
def gone() -> None: ...


smaller = Router()  # the same module after d.gone was removed from the code
smaller.add(router.get("d.keep"))  # type: ignore[arg-type]


def codes(h: RobotHarness) -> set[str]:
    return {r.code for r in h.portal.registrations.values()}


@pytest.fixture
def sim() -> Iterator[PortalSimulator]:
    simulator = PortalSimulator()
    with SimulatorServer(simulator):
        yield simulator


def cli_env(h: RobotHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: str) -> None:
    env = {
        "B24R_DATA_DIR": str(tmp_path),
        "B24R_SECRET_KEY": "test-secret-key",
        "B24R_ALLOW_HTTP_PORTALS": "true",
        "B24R_PUBLIC_URL": "http://robots.example.test",
        "B24R_CLIENT_ID": h.app.client_id,
        "B24R_CLIENT_SECRET": h.app.client_secret,
        "B24R_APP": app,
        "COLUMNS": "200",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)


async def invoke(args: list[str], stdin: str | None = None) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, args, input=stdin)


async def test_sync_without_an_app_never_deletes_module_robots(
    sim: PortalSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
        await h.install()
        assert codes(h) == {"d.keep", "d.gone"}
        cli_env(h, tmp_path, monkeypatch, app="")  # B24R_APP not set
        dry = await invoke(["sync", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        flat = " ".join(dry.output.split())
        assert "keep" in flat and "B24R_APP is not set" in flat and "deletions" not in flat
        real = await invoke(["sync", "--yes"])  # even --yes does not delete them
        assert real.exit_code == 0, real.output
        assert "0 deleted" in real.output and "2 kept" in real.output
        assert codes(h) == {"d.keep", "d.gone"}


async def test_deletions_are_listed_apart_and_need_yes_when_not_interactive(
    sim: PortalSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
        await h.install()
        cli_env(h, tmp_path, monkeypatch, app="tests.test_sync_deletions:smaller")
        dry = await invoke(["sync", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "deletions" in dry.output and "d.gone" in dry.output and "--yes" in dry.output
        refused = await invoke(["sync"])  # the runner's input is not a terminal
        assert refused.exit_code == 1, refused.output
        assert "1 deletion(s) not made" in refused.output and "--yes" in refused.output
        assert "d.gone" in codes(h)
        done = await invoke(["sync", "--yes"])
        assert done.exit_code == 0, done.output
        assert "1 deleted" in done.output and codes(h) == {"d.keep"}


async def test_an_interactive_sync_asks_before_deleting(
    sim: PortalSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
        await h.install()
        cli_env(h, tmp_path, monkeypatch, app="tests.test_sync_deletions:smaller")
        monkeypatch.setattr(ops, "_interactive", lambda: True)
        no = await invoke(["sync"], stdin="n\n")
        assert "Delete 1 robot(s)/trigger(s)" in no.output and "deletions skipped" in no.output
        assert no.exit_code == 1 and "d.gone" in codes(h)
        yes = await invoke(["sync"], stdin="y\n")
        assert yes.exit_code == 0, yes.output
        assert codes(h) == {"d.keep"}


async def test_background_syncs_keep_unconfirmed_and_foreign_registrations(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        member = h.portal.member_id
        # a robot the portal has under our app that this server never registered (lost ledger, another
        # copy of the server): bizproc.robot.list lists it, the ledger does not know it
        template = next(iter(h.portal.registrations.values()))
        h.portal.registrations["d.foreign"] = Registration(**{**template.__dict__, "code": "d.foreign"})
        h.svc.registry.router = smaller
        report = await h.svc.syncer.sync(member)  # no confirm: what install and the robots page run
        kept = {c.code: c.note for c in report.changes if c.action == "keep"}
        assert kept == {"d.gone": UNCONFIRMED, "d.foreign": NOT_OURS}
        assert codes(h) == {"d.keep", "d.gone", "d.foreign"}
        refused = await h.svc.syncer.sync(member, confirm=lambda deletes: False)
        assert {c.code for c in refused.changes if c.action == "keep"} == {"d.gone", "d.foreign"}
        asked: list[str] = []
        done = await h.svc.syncer.sync(member, confirm=lambda deletes: asked.extend(c.code for c in deletes) or True)
        assert asked == ["d.gone"] and [c.code for c in done.changes if c.action == "delete"] == ["d.gone"]
        assert codes(h) == {"d.keep", "d.foreign"}
        h.svc.registry.router = Router()  # no robots module loaded at all
        empty = await h.svc.syncer.sync(member, confirm=lambda deletes: True)
        assert {c.code: c.note for c in empty.changes} == {"d.keep": NO_APP, "d.foreign": NOT_OURS}
        assert codes(h) == {"d.keep", "d.foreign"}


async def test_sync_without_a_public_url_refuses_to_repoint_the_handlers(
    sim: PortalSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
        await h.install()
        before = {r.code: r.handler for r in h.portal.registrations.values()}
        assert set(before) == {"d.keep", "d.gone"}
        assert all(url.startswith("http://robots.example.test/") for url in before.values())
        cli_env(h, tmp_path, monkeypatch, app="tests.test_sync_deletions:router")
        monkeypatch.delenv("B24R_PUBLIC_URL")
        for args in (["sync", "--yes"], ["sync", "--dry-run"]):
            refused = await invoke(args)
            flat = " ".join(refused.output.split())
            assert refused.exit_code == 2 and "B24R_PUBLIC_URL is not set" in flat, refused.output
            assert "http://127.0.0.1:8000/b24/robot" in flat and "Traceback" not in refused.output
        assert {r.code: r.handler for r in h.portal.registrations.values()} == before
        # a server that ran from this data dir recorded where it listens: sync follows that URL
        (tmp_path / "served-url").write_text("http://robots.example.test\n")
        followed = await invoke(["sync", "--yes"])
        assert followed.exit_code == 0 and "0 added, 0 updated, 0 deleted" in followed.output, followed.output
        assert {r.code: r.handler for r in h.portal.registrations.values()} == before
