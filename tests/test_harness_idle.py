"""RobotHarness.until_idle waits for what its docstring names, retries that fall due included."""

from __future__ import annotations

from pathlib import Path

from b24robots import Int, Params, RobotContext, Router
from b24robots.robots.signals import Retry
from b24robots.testing.app_fixtures import RobotHarness

router = Router()


class Out(Params):
    n = Int("N")


@router.robot("i.again", name="Asks to retry", outputs=Out)
async def again(ctx: RobotContext) -> Out:
    if ctx.attempt == 1:
        raise Retry(delay=0.4)  # failed, due again in 0.4 s: not queued, not running, not owed meanwhile
    return Out(n=ctx.attempt)


@router.robot("i.later", name="Asks to retry much later", outputs=Out)
async def much_later(ctx: RobotContext) -> Out:
    raise Retry(delay=3600)


async def test_until_idle_waits_for_a_retry_that_falls_due(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        await h.sim.start_robot(h.portal, "i.again", use_subscription="N")
        await h.until_idle(timeout=10)
        (inv,) = h.svc.journal.recent()
        assert inv.attempts == 2 and inv.state == "delivered" and inv.outputs == {"n": "2"}, inv


async def test_until_idle_leaves_a_retry_due_after_its_timeout(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        await h.sim.start_robot(h.portal, "i.later", use_subscription="N")
        await h.until_idle(timeout=2)  # returns: the retry is an hour away
        (inv,) = h.svc.journal.recent()
        assert inv.state == "failed" and inv.attempts == 1
