"""Robots used by the multi-process tests (imported by `b24robots worker tests.proc_robots:router`)."""

from __future__ import annotations

import asyncio
import os

from b24robots import Int, Params, RobotContext, Router, String

router = Router()


class Out(Params):
    n = Int("N")
    pid = Int("Pid")


@router.robot("p.quick", name="Quick", outputs=Out)
async def quick(ctx: RobotContext) -> Out:
    await asyncio.sleep(0.001)
    return Out(n=ctx.attempt, pid=os.getpid())


@router.robot("p.sleepy", name="Sleepy", outputs=Out)
async def sleepy(ctx: RobotContext) -> Out:
    # long enough to be killed in the middle of it; marks the start so the test knows when
    marker = os.environ.get("B24R_TEST_MARKER")
    if marker:
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    await asyncio.sleep(float(os.environ.get("B24R_TEST_SLEEP", "3")))
    return Out(n=ctx.attempt, pid=os.getpid())


class Who(Params):
    me = String("Me")
    pid = Int("Pid")


@router.robot("p.whoami", name="Who am I", outputs=Who)
async def whoami(ctx: RobotContext) -> Who:
    # calls the portal as the run-as user whose token came with the call another process accepted
    if ctx.rest_as_caller is None:
        return Who(me="none", pid=os.getpid())
    me = await ctx.rest_as_caller.call("profile")
    return Who(me=str(me["ID"]), pid=os.getpid())
