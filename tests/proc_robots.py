"""Robots used by the multi-process tests (imported by `b24robots worker tests.proc_robots:router`)."""

from __future__ import annotations

import asyncio
import os

from b24robots import Int, Params, RobotContext, Router

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
