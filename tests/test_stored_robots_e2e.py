"""Stored robots run in the sandbox, end to end through the simulator."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from b24robots.robots.spec import RobotSpec
from b24robots.testing.app_fixtures import RobotHarness

ROOT = Path(__file__).resolve().parent.parent


def load_example() -> tuple[RobotSpec, str]:
    doc = yaml.safe_load((ROOT / "examples" / "deal_total.yaml").read_text(encoding="utf-8"))
    source = doc.pop("source")
    return RobotSpec.from_document(doc), source


CALLER = """
def run(inputs, ctx):
    deal = ctx.call("crm.deal.get", {"id": ctx.document_id[2].split("_")[-1]})
    ctx.log("deal " + deal["TITLE"])
    return {"title": deal["TITLE"], "portal": ctx.portal}
"""

BROKEN = """
def run(inputs, ctx):
    x = 1
    return {"v": x / 0}
"""


async def test_stored_robot_runs_in_the_sandbox_and_rolls_back(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        spec, source = load_example()
        h.svc.register.save(spec, source, author="anna", comment="first")
        await h.install()
        assert "demo.deal_total" in {r.code for r in h.portal.registrations.values()}
        wf = await h.run_robot("demo.deal_total", properties={"amount": 100.0, "vat_rate": "20"})
        assert float(wf.return_values["total"]) == 120.0 and float(wf.return_values["vat"]) == 20.0
        assert any("VAT 20% on 100" in e.message for e in wf.log)
        inv = h.svc.journal.recent(robot="demo.deal_total")[0]
        assert inv.origin == "stored" and inv.state == "delivered"

        # version 2 changes the rounding; rollback to version 1 restores it
        h.svc.register.save(spec, source.replace("ROUND_HALF_UP", "ROUND_DOWN"), author="anna", comment="v2")
        wf = await h.run_robot("demo.deal_total", properties={"amount": 0.05, "vat_rate": "10"})
        assert float(wf.return_values["vat"]) == 0.0
        h.svc.register.activate("demo.deal_total", 1)
        wf = await h.run_robot("demo.deal_total", properties={"amount": 0.05, "vat_rate": "10"})
        assert float(wf.return_values["vat"]) == 0.01


async def test_stored_code_calls_rest_through_the_parent(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        deal = h.portal.add_deal(TITLE="Big order")
        spec = RobotSpec.from_document(
            {
                "code": "st.caller",
                "name": "Caller",
                "return_properties": {"title": {"name": "Title"}, "portal": {"name": "Portal"}},
            }
        )
        h.svc.register.save(spec, CALLER, author="anna")
        await h.install()
        wf = await h.run_robot("st.caller", document_id=("crm", "CCrmDocumentDeal", f"DEAL_{deal['ID']}"))
        assert wf.return_values["title"] == "Big order"
        assert wf.return_values["portal"] == h.portal.domain
        assert any(c.method == "crm.deal.get" for c in h.sim.calls)


async def test_stored_code_error_points_at_its_own_line(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)
        spec = RobotSpec.from_document(
            {"code": "st.broken", "name": "Broken", "return_properties": {"v": {"name": "V"}}}
        )
        h.svc.register.save(spec, BROKEN, author="anna")
        await h.install()
        wf = await h.run_robot("st.broken")
        assert any("ZeroDivisionError" in e.message for e in wf.log)
        inv = h.svc.journal.recent(robot="st.broken")[0]
        assert inv.state == "dead"
        assert "line 4" in inv.error and "<robot st.broken v1>" in inv.error


SPIN = """
def run(inputs, ctx):
    n = 0
    while True:
        n += 1
"""


async def test_per_robot_limits_apply_within_the_caps(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path, settings={"sandbox_wall_seconds": 5.0}) as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)
        spec = RobotSpec.from_document({"code": "st.spin", "name": "Spin", "return_properties": {"v": {"name": "V"}}})
        h.svc.register.save(spec, SPIN, author="anna", limits={"cpu_seconds": 0.3, "wall_seconds": 60})
        await h.install()
        wf = await h.run_robot("st.spin", timeout=20)
        inv = h.svc.journal.recent(robot="st.spin")[0]
        assert inv.state == "dead" and ("cpu" in inv.error or "timeout" in inv.error)
        assert inv.finished_at is not None and inv.started_at is not None
        assert inv.finished_at - inv.started_at < 4.5  # the robot's 0.3 s CPU limit, not the 5 s cap
        assert any("limit" in e.message for e in wf.log)


PATIENT = """
def run(inputs, ctx):
    while True:  # catching the error does not help: the run is out of time
        try:
            {call}
        except ctx.RestError:
            pass
"""
PATIENT_SPEC = {"code": "st.patient", "name": "Patient", "return_properties": {"v": {"name": "V"}}}
SLOW_CALLS = {
    "call": 'ctx.call("crm.deal.get", {"id": 1})',
    "batch": 'ctx.batch({"d": ["crm.deal.get", {"id": 1}]})',
    "call_as_caller": 'ctx.call_as_caller("crm.deal.get", {"id": 1})',
}


@pytest.mark.parametrize("kind", sorted(SLOW_CALLS))
async def test_a_slow_rest_call_gets_only_the_wall_time_the_run_has_left(tmp_path: Path, kind: str) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)
        spec = RobotSpec.from_document(PATIENT_SPEC)
        source = PATIENT.replace("{call}", SLOW_CALLS[kind])
        h.svc.register.save(spec, source, author="anna", limits={"wall_seconds": 1})
        await h.install()
        # the portal takes 10 s over the first such request (a batch is one request to `batch`)
        h.sim.faults.delay(10, count=1, method="batch" if kind == "batch" else "crm.deal.get")
        started = time.monotonic()
        wf = await h.run_robot("st.patient", user_id=2, timeout=20)
        took = time.monotonic() - started
        inv = h.svc.journal.recent(robot="st.patient")[0]
        assert inv.state == "dead", inv.error
        assert "stopped by the timeout limit" in inv.error and "wall-clock limit" in inv.error, inv.error
        assert any("wall-clock limit" in e.message for e in wf.log)
        assert took < 5  # not the 10 s the portal would take


async def test_a_slow_rest_call_gets_only_the_proxied_time_the_run_has_left(tmp_path: Path) -> None:
    # B24R_SANDBOX_MAX_PROXIED_SECONDS caps it for every robot, below the robot's own 10 s wall limit
    async with RobotHarness(data_dir=tmp_path, settings={"sandbox_max_proxied_seconds": 1.0}) as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)
        spec = RobotSpec.from_document(PATIENT_SPEC)
        source = PATIENT.replace("{call}", SLOW_CALLS["call"])
        h.svc.register.save(spec, source, author="anna", limits={"wall_seconds": 10})
        await h.install()
        h.sim.faults.delay(10, count=1, method="crm.deal.get")
        started = time.monotonic()
        await h.run_robot("st.patient", timeout=20)
        took = time.monotonic() - started
        inv = h.svc.journal.recent(robot="st.patient")[0]
        assert inv.state == "dead", inv.error
        assert "stopped by the proxied_time limit" in inv.error and "more than 1 s in proxied requests" in inv.error
        assert took < 5
