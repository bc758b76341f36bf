"""End to end through the simulator: install, sync, robot call, worker, batched answer."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from b24robots import (
    Bool,
    Date,
    DateTime,
    Double,
    File,
    Int,
    Params,
    RobotContext,
    RobotFailure,
    Router,
    Select,
    String,
    Text,
    User,
)
from b24robots.testing.app_fixtures import RobotHarness

router = Router()


class AllIn(Params):
    s = String("S", required=True)
    t = Text("T")
    i = Int("I")
    d = Double("D")
    b = Bool("B")
    dt = Date("Date")
    dtt = DateTime("DateTime")
    sel = Select("Sel", options={"a": "A", "b": "B"})
    u = User("U")
    f = File("F")
    many = String("Many", multiple=True)


class AllOut(Params):
    s = String("S")
    t = Text("T")
    i = Int("I")
    d = Double("D")
    b = Bool("B")
    dt = Date("Date")
    sel = Select("Sel", options={"a": "A", "b": "B"})
    u = User("U")
    many = String("Many", multiple=True)


@router.robot("e2e.all_types", name="All types", inputs=AllIn, outputs=AllOut)
def all_types(inputs: AllIn, ctx: RobotContext) -> AllOut:
    ctx.log(f"echo for {ctx.document_id[2]}")
    return AllOut(
        s=inputs.s.upper(),
        t=inputs.t,
        i=(inputs.i or 0) + 1,
        d=(inputs.d or 0) * 2,
        b=not inputs.b,
        dt=inputs.dt,
        sel=inputs.sel,
        u=inputs.u,
        many=list(reversed(inputs.many)),
    )


class FailOut(Params):
    reason = String("Reason", default="none")
    ok = Bool("OK", default=True)


@router.robot("e2e.fails", name="Fails", outputs=FailOut)
async def fails() -> None:
    raise RobotFailure("credit limit exceeded", outputs={"ok": False})


@router.robot("e2e.no_wait", name="Fire and forget")
def no_wait(ctx: RobotContext) -> None:
    ctx.log("ran")


@pytest.fixture
async def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        yield h


async def test_install_registers_every_robot(harness: RobotHarness) -> None:
    regs = harness.portal.registrations
    codes = sorted(r.code for r in regs.values())
    assert codes == ["e2e.all_types", "e2e.fails", "e2e.no_wait"]
    inst = harness.svc.installations.get(harness.portal.member_id)
    assert inst.sync_status == "ok" and inst.domain == harness.portal.domain


async def test_every_type_in_and_out(harness: RobotHarness) -> None:
    wf = await harness.run_robot(
        "e2e.all_types",
        properties={
            "s": "hello",
            "t": "multi\nline",
            "i": 41,
            "d": 1.25,
            "b": True,
            "dt": date(2024, 5, 27),
            "dtt": "27.05.2024 14:30:00",
            "sel": "b",
            "u": 7,
            "f": 99,
            "many": ["x", "y"],
        },
    )
    assert wf.closed_by == "event"
    rv = wf.return_values
    assert rv["s"] == "HELLO" and rv["t"] == "multi\nline"
    assert str(rv["i"]) == "42" and float(rv["d"]) == 2.5
    assert rv["b"] in ("N", False)
    assert rv["sel"] == "b"
    assert rv["many"] == ["y", "x"]
    inv = harness.svc.journal.recent(robot="e2e.all_types")[0]
    assert inv.state == "delivered" and inv.attempts == 1
    assert inv.inputs is not None and inv.inputs["dt"] == "2024-05-27"
    # ctx.log lines reach the workflow log through bizproc.activity.log, before the answer
    logged = [e for e in wf.log if "echo for DEAL_1" in e.message]
    assert [e.source for e in logged] == ["activity.log"]


async def test_business_failure_answers_with_defaults_and_message(harness: RobotHarness) -> None:
    wf = await harness.run_robot("e2e.fails")
    assert wf.return_values["ok"] in ("N", False)
    assert wf.return_values["reason"] == "none"
    assert any("credit limit exceeded" in e.message for e in wf.log)
    inv = harness.svc.journal.recent(robot="e2e.fails")[0]
    assert inv.state == "delivered" and inv.error == "credit limit exceeded"


async def test_bad_input_is_journaled_and_the_portal_is_told(harness: RobotHarness) -> None:
    wf = await harness.run_robot("e2e.all_types", properties={"s": "", "i": 5})
    assert wf.closed_by == "event"
    assert any("bad input" in e.message and "'s'" in e.message for e in wf.log)
    inv = harness.svc.journal.recent(robot="e2e.all_types")[0]
    assert inv.state == "dead" and "required" in inv.error and inv.delivered_at is not None


async def test_no_subscription_robot_gets_no_event_send(harness: RobotHarness) -> None:
    wf = await harness.run_robot("e2e.no_wait")
    await harness.until_idle()
    inv = harness.svc.journal.recent(robot="e2e.no_wait")[0]
    assert inv.state == "answered" and inv.log == ["ran"] and inv.delivered_at is None
    sends = [c for c in harness.sim.calls if c.method == "batch"]
    assert all(wf.event_token not in str(c) for c in sends)
