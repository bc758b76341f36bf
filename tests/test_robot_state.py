"""Disable, enable and delete a stored robot: in the register (SQLite and PostgreSQL), on the portals,
for calls that still arrive, from the CLI and from the admin UI over HTTP, always audited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from b24robots import Router
from b24robots.cli import app as cli
from b24robots.cli import robot_state
from b24robots.errors import NotFound
from b24robots.robots.registry import Registry
from b24robots.robots.spec import RobotSpec
from b24robots.store.audit import Audit
from b24robots.store.db import Database
from b24robots.store.register import Register
from b24robots.store.users import Users
from b24robots.testing import PortalSimulator, SimulatorServer
from b24robots.testing.app_fixtures import RobotHarness
from tests.ui_helpers import PASSWORD, csrf_of, sign_in

SOURCE = "def run(inputs, ctx):\n    return {}\n"
router = Router()


@router.robot("m.twin", name="Module twin")
def twin() -> None: ...


def stored(code: str, name: str = "Stored") -> RobotSpec:
    return RobotSpec(code=code, name=name, use_subscription=True)  # the workflow waits for the answer


def codes(h: RobotHarness) -> set[str]:
    return {r.code for r in h.portal.registrations.values()}


def test_states_keep_the_rows_and_a_deleted_code_is_reusable(db: Database) -> None:
    reg = Register(db)
    reg.save(stored("s.a"), SOURCE, author="anna")
    reg.save(stored("s.a", "Stored 2"), SOURCE + "# 2\n", author="anna")
    info = reg.set_state("s.a", "disabled", actor="anna", address="10.0.0.1")
    assert info.state == "disabled" and info.versions == 2
    assert reg.active("s.a") is None and reg.active_all() == [] and reg.states() == {"s.a": "disabled"}
    assert reg.exists("s.a") and [r.state for r in reg.robots()] == ["disabled"]
    reg.set_state("s.a", "active", actor="anna")
    assert reg.active("s.a") is not None
    reg.set_state("s.a", "deleted", actor="boris")
    assert not reg.exists("s.a") and reg.robots() == [] and reg.states() == {"s.a": "deleted"}
    assert [v.number for v in reg.versions("s.a")] == [1, 2]  # kept as history
    with pytest.raises(NotFound):
        reg.set_state("s.a", "active", actor="anna")  # deleted: create it again instead
    again = reg.save(stored("s.a", "New"), SOURCE, author="carl")
    assert again.number == 3 and reg.state("s.a") == "active" and reg.exists("s.a")
    entries = [(e.action, e.actor, e.target, e.details["from"]) for e in Audit(db).recent(action="robot.")]
    assert entries == [
        ("robot.delete", "boris", "s.a", "active"),
        ("robot.enable", "anna", "s.a", "disabled"),
        ("robot.disable", "anna", "s.a", "active"),
    ]


def test_a_disabled_adopted_robot_does_not_fall_back_to_the_module_code(db: Database) -> None:
    reg = Register(db)
    registry = Registry(router, reg)
    reg.save(stored("m.twin"), SOURCE, author="anna", origin="adopted")
    reg.set_state("m.twin", "disabled", actor="anna")
    assert registry.resolve("m.twin") is None and registry.all() == []
    assert "disabled" in registry.unavailable("m.twin")[1]
    reg.set_state("m.twin", "deleted", actor="anna")  # deleted: the module robot it came from runs again
    found = registry.resolve("m.twin")
    assert found is not None and found.origin == "module"


async def test_disable_unregisters_and_answers_calls_that_still_arrive(tmp_path: Path) -> None:
    async with RobotHarness(Router(), data_dir=tmp_path, sandbox=False) as h:
        h.svc.register.save(stored("s.calc"), SOURCE, author="anna")
        await h.install()
        assert codes(h) == {"s.calc"}
        h.svc.register.set_state("s.calc", "disabled", actor="anna")
        # the workflow started before the portal heard of it: answered with a log line, not dropped
        wf = await h.run_robot("s.calc")
        assert wf.is_closed
        assert any("robot s.calc is disabled" in e.message and "enable it" in e.message for e in wf.log)
        (inv,) = h.svc.journal.recent()
        assert inv.state == "dead" and "disabled" in inv.error and not inv.owed
        (report,) = await h.svc.sync_robot("s.calc")
        assert [(c.action, c.code) for c in report.changes] == [("delete", "s.calc")]
        assert codes(h) == set()
        h.svc.register.set_state("s.calc", "active", actor="anna")
        await h.svc.sync_robot("s.calc")
        assert codes(h) == {"s.calc"}


@pytest.fixture
def sim() -> Iterator[PortalSimulator]:
    simulator = PortalSimulator()
    with SimulatorServer(simulator):
        yield simulator


async def test_cli_disable_enable_delete(sim: PortalSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with RobotHarness(Router(), data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
        h.svc.register.save(stored("s.cli"), SOURCE, author="anna")
        await h.install()
        env = {
            "B24R_DATA_DIR": str(tmp_path),
            "B24R_SECRET_KEY": "test-secret-key",
            "B24R_ALLOW_HTTP_PORTALS": "true",
            "B24R_PUBLIC_URL": "http://robots.example.test",
            "B24R_CLIENT_ID": h.app.client_id,
            "B24R_CLIENT_SECRET": h.app.client_secret,
            "COLUMNS": "200",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)

        async def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
            result = await asyncio.to_thread(CliRunner().invoke, cli, ["robots", *args], input=stdin)
            return result.exit_code, result.output

        code, output = await run("disable", "s.cli")
        assert code == 2 and "add --yes" in output and "Traceback" not in output
        assert h.svc.register.state("s.cli") == "active"
        monkeypatch.setattr(robot_state, "_interactive", lambda: True)
        code, output = await run("disable", "s.cli", stdin="n\n")
        assert code == 0 and "nothing changed" in output and h.svc.register.state("s.cli") == "active"
        code, output = await run("disable", "s.cli", stdin="y\n")
        assert code == 0, output
        assert "s.cli disabled" in output and "delete s.cli" in output and codes(h) == set()
        code, output = await run("list")
        assert "disabled" in output and "s.cli" in output
        code, output = await run("enable", "s.cli")
        assert code == 0 and "add s.cli" in output and codes(h) == {"s.cli"}
        code, output = await run("delete", "s.cli", "--yes")
        assert code == 0 and "s.cli deleted" in output and codes(h) == set()
        code, output = await run("delete", "s.cli", "--yes")
        assert code == 2 and "no stored robot with code 's.cli'" in output
        actions = [e.action for e in h.svc.audit.recent(action="robot.")]
        assert actions[:3] == ["robot.delete", "robot.enable", "robot.disable"]
        assert all(e.actor.startswith("cli:") for e in h.svc.audit.recent(action="robot."))


@pytest.mark.parametrize("lang", ["en", "ru"])
async def test_admin_disable_and_delete_ask_first_and_are_audited(tmp_path: Path, lang: str) -> None:
    async with RobotHarness(Router(), data_dir=tmp_path, sandbox=False) as h:
        h.svc.register.save(stored("s.ui"), SOURCE, author="anna")
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        async with h.client() as c:
            c.cookies.set("b24r_lang", lang)
            csrf = await sign_in(c)
            page = await c.get("/admin/robots/s.ui")
            assert 'id="disable-button"' in page.text and 'id="delete-button"' in page.text
            ask = await c.post("/admin/robots/s.ui/state", data={"csrf": csrf, "action": "disable"})
            assert ask.status_code == 200 and 'id="confirm-yes"' in ask.text
            question = {"en": "Disable s.ui?", "ru": "Отключить s.ui?"}[lang]
            assert question in ask.text
            assert h.svc.register.state("s.ui") == "active"  # asking changed nothing
            done = await c.post(
                "/admin/robots/s.ui/state", data={"csrf": csrf_of(ask.text), "action": "disable", "confirmed": "1"}
            )
            assert done.status_code == 303 and done.headers["location"] == "/admin/robots/s.ui"
            await h.svc.wait_syncs()
            assert h.svc.register.state("s.ui") == "disabled" and codes(h) == set()
            page = await c.get("/admin/robots/s.ui")
            assert 'id="disabled-note"' in page.text and 'id="enable-button"' in page.text
            listing = await c.get("/admin/robots")
            assert 'data-code="s.ui"' in listing.text
            ask = await c.post("/admin/robots/s.ui/state", data={"csrf": csrf, "action": "delete"})
            assert ask.status_code == 200 and 'id="confirm-yes"' in ask.text
            done = await c.post("/admin/robots/s.ui/state", data={"csrf": csrf, "action": "delete", "confirmed": "1"})
            assert done.status_code == 303 and done.headers["location"] == "/admin/robots"
            assert h.svc.register.state("s.ui") == "deleted"
            listing = await c.get("/admin/robots")
            assert 'data-code="s.ui"' not in listing.text
            gone = await c.post("/admin/robots/s.ui/state", data={"csrf": csrf, "action": "enable"})
            assert gone.status_code == 404
        entries = [(e.action, e.actor, e.target) for e in h.svc.audit.recent(action="robot.")]
        assert entries == [("robot.delete", "anna", "s.ui"), ("robot.disable", "anna", "s.ui")]


async def test_portal_resync_asks_before_deleting(tmp_path: Path) -> None:
    full, smaller = Router(), Router()

    @full.robot("p.keep", name="Keep")
    def keep() -> None: ...

    @full.robot("p.gone", name="Gone")
    def gone() -> None: ...

    smaller.add(full.get("p.keep"))  # type: ignore[arg-type]
    async with RobotHarness(full, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        h.svc.registry.router = smaller
        member = h.portal.member_id
        async with h.client() as c:
            csrf = await sign_in(c)
            ask = await c.post(f"/admin/portals/{member}/sync", data={"csrf": csrf})
            assert ask.status_code == 200 and 'data-code="p.gone"' in ask.text and 'id="confirm-no"' in ask.text
            assert codes(h) == {"p.keep", "p.gone"}
            kept = await c.post(f"/admin/portals/{member}/sync", data={"csrf": csrf, "confirmed": "0"})
            assert kept.status_code == 303 and codes(h) == {"p.keep", "p.gone"}
            page = await c.get("/admin/portals")
            assert "not deleted: p.gone" in page.text
            done = await c.post(
                f"/admin/portals/{member}/sync", data={"csrf": csrf, "confirmed": "1", "delete": "robot:p.gone"}
            )
            assert done.status_code == 303 and codes(h) == {"p.keep"}
            page = await c.get("/admin/portals")
            assert "0 added, 0 updated, 1 removed" in page.text
