"""Robot code calls the portal as the robot's run-as user: the token the queue sent in the call's auth.

Source: bizproc classes/general/restactivity.php::execute issues the robot user's token into the call
(protocol §9.3). The token is stored with the call, encrypted, and cleared once the run is over or the
token expired: never in plain text in the database, never in the logs. A separate worker process using
it: tests/test_pipeline_processes.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from b24robots import Params, Retry, RobotContext, Router, String
from b24robots.jobs.pruner import Pruner
from b24robots.jobs.wakeup import Wakeup
from b24robots.jobs.worker import Worker
from b24robots.robots.spec import RobotSpec
from b24robots.store.models import InvocationRow
from b24robots.store.users import Users
from b24robots.testing.app_fixtures import RobotHarness
from tests.conftest import new_pg_database
from tests.ui_helpers import PASSWORD, sign_in

router = Router()


class Out(Params):
    me = String("Me")
    app = String("App")


@router.robot("ras.whoami", name="Who am I", outputs=Out)
async def whoami(ctx: RobotContext) -> Out:
    assert ctx.rest is not None and ctx.rest_as_caller is not None
    me = await ctx.rest_as_caller.call("profile")
    app = await ctx.rest.call("profile")
    return Out(me=me["ID"], app=app["ID"])


STORED = """
def run(inputs, ctx):
    deal = ctx.call_as_caller("crm.deal.get", {"id": ctx.document_id[2].split("_")[-1]})
    try:
        ctx.call_as_caller("app.info")
    except ctx.RestError as exc:
        ctx.log("refused: " + exc.code)
    return {"title": deal["TITLE"]}
"""


def _user_token(h: RobotHarness, user_id: int) -> str:
    tokens = [t.token for t in h.sim.access_tokens.values() if t.user_id == user_id]
    assert tokens, "the portal issued no token for that user"
    return tokens[-1]


def _stored(h: RobotHarness, inv_id: int) -> tuple[str | None, float | None]:
    """What the journal row holds of the run-as user's token (raw SQL, no decryption)."""
    with h.svc.db.read() as s:
        row = s.execute(
            select(InvocationRow.caller_token, InvocationRow.caller_expires_at).where(InvocationRow.id == inv_id)
        ).one()
    return row.caller_token, row.caller_expires_at


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'b24robots.db'}"
    else:
        yield new_pg_database(request.getfixturevalue("pg_server"), request.getfixturevalue("pg_template"))


class Who(Params):
    me = String("Me")


def who_router(attempts: list[int], retry_delay: float | None = None) -> Router:
    local = Router()

    @local.robot("ras.who", name="Who", outputs=Who)
    async def who(ctx: RobotContext) -> Who:
        attempts.append(ctx.attempt)
        if retry_delay is not None and ctx.attempt == 1:
            raise Retry(delay=retry_delay)
        if ctx.rest_as_caller is None:
            return Who(me="none")
        me = await ctx.rest_as_caller.call("profile")
        return Who(me=me["ID"])

    return local


async def test_module_robot_calls_as_its_run_as_user_and_the_token_is_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False, settings={"metrics_token": "s"}) as h:
        await h.install()
        wf = await h.run_robot("ras.whoami", user_id=2)
        assert (wf.return_values["me"], wf.return_values["app"]) == ("2", "1")
        profiles = [c for c in h.sim.calls if c.method == "profile"]
        assert sorted(c.user_id or 0 for c in profiles) == [1, 2]
        inv = h.svc.journal.recent(robot="ras.whoami")[0]
        assert _stored(h, inv.id) == (None, None)  # forgotten once the run was over
        assert h.svc.caller_tokens.held() == 0
        token = _user_token(h, 2)
        for path in tmp_path.glob("b24robots.db*"):  # the database and its WAL: never the plain token
            assert token.encode() not in path.read_bytes(), path
        assert all(token not in r.getMessage() for r in caplog.records)
        Users(h.svc.db).create("anna", PASSWORD)
        async with h.client() as c:  # nor in what operators see
            await sign_in(c)
            for url in (f"/admin/journal/{inv.id}", "/admin/journal", "/admin/journal/rows"):
                page = await c.get(url)
                assert page.status_code == 200 and str(inv.id) in page.text and token not in page.text, url
            metrics = await c.get("/metrics", headers={"Authorization": "Bearer s"})
            assert metrics.status_code == 200 and token not in metrics.text


async def test_the_token_is_stored_encrypted_until_the_run_then_cleared(tmp_path: Path, database_url: str) -> None:
    attempts: list[int] = []
    async with RobotHarness(
        who_router(attempts), data_dir=tmp_path, database_url=database_url, sandbox=False, workers=False
    ) as h:
        await h.install()
        wf = await h.sim.start_robot(h.portal, "ras.who", user_id=2)
        (inv,) = h.svc.journal.recent(robot="ras.who")
        token = _user_token(h, 2)
        raw, expires = _stored(h, inv.id)
        assert raw and token not in raw and token[:8] not in raw  # no plain text in the column
        assert h.svc.vault.decrypt(raw) == token
        assert expires is not None and time.time() < expires <= time.time() + 3600
        # the worker of another Services (as in another process) reads it from the database
        worker = _worker(h)
        task = asyncio.create_task(worker.run())
        try:
            await _until(lambda: h.svc.journal.get(inv.id).state == "answered")
        finally:
            await worker.stop(1.0)
            task.cancel()
        assert h.svc.journal.get(inv.id).outputs == {"me": "2"}
        (profile,) = [c for c in h.sim.calls if c.method == "profile"]
        assert profile.user_id == 2  # the portal saw the user's token, not the app's
        assert _stored(h, inv.id) == (None, None)
        assert not wf.closed_by  # nothing delivered: this harness runs no sender


async def test_an_expired_token_gives_no_caller_and_is_cleared(tmp_path: Path, database_url: str) -> None:
    attempts: list[int] = []
    async with RobotHarness(
        who_router(attempts), data_dir=tmp_path, database_url=database_url, sandbox=False, workers=False
    ) as h:
        await h.install()
        await h.sim.start_robot(h.portal, "ras.who", user_id=2)
        (inv,) = h.svc.journal.recent(robot="ras.who")
        _expire(h, inv.id)
        worker = _worker(h)
        task = asyncio.create_task(worker.run())
        try:
            await _until(lambda: h.svc.journal.get(inv.id).state == "answered")
        finally:
            await worker.stop(1.0)
            task.cancel()
        assert h.svc.journal.get(inv.id).outputs == {"me": "none"}  # ctx.rest_as_caller is None
        assert not [c for c in h.sim.calls if c.method == "profile"]  # the expired token was never sent
        assert _stored(h, inv.id) == (None, None)


async def test_the_pruner_forgets_expired_tokens_of_calls_still_waiting(tmp_path: Path, database_url: str) -> None:
    async with RobotHarness(
        who_router([]), data_dir=tmp_path, database_url=database_url, sandbox=False, workers=False
    ) as h:
        await h.install()
        await h.sim.start_robot(h.portal, "ras.who", user_id=2)
        await h.sim.start_robot(h.portal, "ras.who", user_id=2)
        old, fresh = sorted(i.id for i in h.svc.journal.recent(robot="ras.who"))
        _expire(h, old)
        pruner = Pruner(h.svc.retention, interval=60, batch=10, sweep=h.svc.caller_tokens.forget_expired)
        await pruner.prune_once()
        assert _stored(h, old) == (None, None)
        assert _stored(h, fresh)[0] is not None  # still valid: kept for its run
        assert h.svc.journal.get(old).state == "queued"


async def test_a_retry_keeps_a_valid_token_and_drops_one_that_expires_first(tmp_path: Path) -> None:
    attempts: list[int] = []
    async with RobotHarness(who_router(attempts, retry_delay=0.05), data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        wf = await h.run_robot("ras.who", user_id=2)
        assert attempts == [1, 2] and wf.return_values["me"] == "2"  # the second attempt still acts as the user
    attempts = []
    async with RobotHarness(who_router(attempts, retry_delay=7200), data_dir=tmp_path / "2", sandbox=False) as h:
        await h.install()
        await h.sim.start_robot(h.portal, "ras.who", user_id=2)
        await _until(lambda: h.svc.journal.recent(robot="ras.who")[0].state == "failed")
        (inv,) = h.svc.journal.recent(robot="ras.who")
        assert _stored(h, inv.id) == (None, None)  # due after the token's hour: nothing worth keeping


def _worker(h: RobotHarness) -> Worker:
    return Worker(
        h.svc.journal, h.svc.installations, h.svc.runner, h.svc.rest, Wakeup(), poll=0.05,
        caller_tokens=h.svc.caller_tokens,
    )  # fmt: skip


def _expire(h: RobotHarness, inv_id: int) -> None:
    with h.svc.db.write() as s:
        s.execute(update(InvocationRow).where(InvocationRow.id == inv_id).values(caller_expires_at=time.time() - 1))


async def _until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_without_a_run_as_user_there_is_no_caller_client(tmp_path: Path) -> None:
    seen: list[bool] = []
    local = Router()

    @local.robot("ras.none", name="None", auth_user_id=0, use_subscription=False)
    def none(ctx: RobotContext) -> None:
        seen.append(ctx.rest_as_caller is None)

    async with RobotHarness(local, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        await h.run_robot("ras.none")
        assert seen == [True]


async def test_stored_code_calls_as_the_caller_through_the_proxy(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        deal = h.portal.add_deal(TITLE="Mine")
        spec = RobotSpec.from_document(
            {"code": "st.asuser", "name": "As user", "return_properties": {"title": {"name": "Title"}}}
        )
        h.svc.register.save(spec, STORED, author="anna")
        await h.install()
        wf = await h.run_robot("st.asuser", document_id=("crm", "CCrmDocumentDeal", f"DEAL_{deal['ID']}"), user_id=2)
        assert wf.return_values["title"] == "Mine"
        (get,) = [c for c in h.sim.calls if c.method == "crm.deal.get"]
        assert get.user_id == 2  # the portal saw the run-as user's token
        # the capability list applies to the caller's token too
        assert not [c for c in h.sim.calls if c.method == "app.info" and c.user_id == 2]
        inv = h.svc.journal.recent(robot="st.asuser")[0]
        assert any("refused" in line and "METHOD_NOT_ALLOWED" in line for line in inv.log), inv.log
