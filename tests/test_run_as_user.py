"""Robot code calls the portal as the robot's run-as user: the token the queue sent in the call's auth.

Source: bizproc classes/general/restactivity.php::execute issues the robot user's token into the call
(protocol §9.3). The token lives in memory for the run only: never in the database or the logs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from b24robots import Params, RobotContext, Router, String
from b24robots.robots.spec import RobotSpec
from b24robots.testing.app_fixtures import RobotHarness

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


async def test_module_robot_calls_as_its_run_as_user_and_the_token_is_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        wf = await h.run_robot("ras.whoami", user_id=2)
        assert (wf.return_values["me"], wf.return_values["app"]) == ("2", "1")
        profiles = [c for c in h.sim.calls if c.method == "profile"]
        assert sorted(c.user_id or 0 for c in profiles) == [1, 2]
        assert len(h.svc.user_tokens) == 0  # forgotten once the run was over
        token = _user_token(h, 2)
        assert token.encode() not in (tmp_path / "b24robots.db").read_bytes()
        assert all(token not in r.getMessage() for r in caplog.records)


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
        inv = h.svc.journal.list(robot="st.asuser")[0]
        assert any("refused" in line and "METHOD_NOT_ALLOWED" in line for line in inv.log), inv.log
