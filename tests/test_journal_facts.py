"""The journal keeps every fact of a run, for module and stored robots and every outcome: what ran (the
stored version or the module handler and spec fingerprint), each attempt's log lines and error, and the
outbound calls (REST and connections) with their attempt and timing, never their parameters."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from b24robots import Params, RobotContext, RobotFailure, Router, String
from b24robots.cli import app as cli
from b24robots.policy import RetryRules
from b24robots.robots.spec import RobotSpec
from b24robots.store.journal import Invocation
from b24robots.testing.app_fixtures import RobotHarness
from tests.test_cli_messages import env_for

SECRET = "s3cr3t-param-value"
router = Router()


class Title(Params):
    title = String("Title")


_flaky_runs: list[int] = []


@router.robot("facts.ok", name="OK", outputs=Title)
async def facts_ok(ctx: RobotContext) -> dict[str, str]:
    ctx.log("reading the deal")
    assert ctx.rest is not None
    deal = await ctx.rest.call("crm.deal.get", {"id": ctx.entity_id, "note": SECRET})
    await ctx.rest.batch({"me": ("user.current", {}), "d": ("crm.deal.get", {"id": ctx.entity_id})})
    return {"title": deal["TITLE"]}


@router.robot("facts.refused", name="Refused", outputs=Title)
def facts_refused(ctx: RobotContext) -> dict[str, str]:
    ctx.log("checking the deal")
    raise RobotFailure("the deal is closed")


@router.robot("facts.crash", name="Crash")
async def facts_crash(ctx: RobotContext) -> None:
    ctx.log(f"attempt {ctx.attempt} starts")
    assert ctx.rest is not None
    await ctx.rest.call("crm.nope.get", {"secret": SECRET})  # the simulator has no such method


@router.robot("facts.flaky", name="Flaky")
def facts_flaky(ctx: RobotContext) -> None:
    _flaky_runs.append(ctx.attempt)
    ctx.log(f"try {ctx.attempt}")
    if ctx.attempt < 3:
        raise RuntimeError(f"not yet ({ctx.attempt})")


STORED_FAILS = """
def run(inputs, ctx):
    ctx.log("stored: reading the deal")
    deal = ctx.call("crm.deal.get", {"id": ctx.document_id[2].split("_")[-1]})
    ctx.log("stored: title " + deal["TITLE"])
    if deal["TITLE"] != "ready":
        raise ValueError("the deal is not ready")
    return {"title": deal["TITLE"]}
"""

STORED_SPIN = """
def run(inputs, ctx):
    ctx.log("stored: spinning")
    while True:
        pass
"""


def stored_spec(code: str) -> RobotSpec:
    return RobotSpec.from_document({"code": code, "name": code, "return_properties": {"title": {"name": "Title"}}})


def fast_retries(h: RobotHarness, attempts: int) -> None:
    h.svc.runner.rules = RetryRules(max_attempts=attempts, base_delay=0.05, max_delay=0.1)


def entry(h: RobotHarness, code: str) -> Invocation:
    return h.svc.journal.recent(robot=code)[0]


async def wait_state(h: RobotHarness, code: str, states: tuple[str, ...], timeout: float = 10.0) -> Invocation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = h.svc.journal.recent(robot=code)
        if rows and rows[0].state in states:
            return rows[0]
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{code} did not reach {states}")


async def test_module_robot_delivered_keeps_handler_fingerprint_log_and_rest_calls(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path) as h:
        await h.install()
        deal = h.portal.add_deal(TITLE="Big order")
        await h.run_robot("facts.ok", document_id=("crm", "CCrmDocumentDeal", f"DEAL_{deal['ID']}"))
        inv = entry(h, "facts.ok")
        assert inv.state == "delivered" and inv.log == ["reading the deal"]
        spec = h.svc.registry.resolve("facts.ok")
        assert spec is not None
        assert inv.ran == {
            "origin": "module",
            "module": "tests.test_journal_facts.facts_ok",
            "fingerprint": spec.spec.fingerprint(),
        }
        assert inv.robot_version_id is None
        assert [(a["attempt"], a["outcome"], a["log"]) for a in inv.attempt_log] == [
            (1, "answered", ["reading the deal"])
        ]
        calls = h.svc.connections.calls_for(inv.id)
        assert [(c.connection, c.kind, c.method, c.target, c.status, c.attempt) for c in calls] == [
            ("bitrix24", "rest", "call", "crm.deal.get", 200, 1),
            ("bitrix24", "rest", "batch", "batch: user.current, crm.deal.get", 200, 1),
        ]
        assert all(c.duration_ms > 0 for c in calls)
        assert SECRET not in repr(calls)


async def test_module_robot_failure_and_crash_keep_their_log_lines(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path) as h:
        fast_retries(h, 2)
        await h.install()
        await h.run_robot("facts.refused")
        refused = entry(h, "facts.refused")
        assert refused.state == "delivered" and refused.error == "the deal is closed"
        assert refused.log == ["checking the deal"] and refused.attempt_log[0]["error"] == "the deal is closed"

        await h.sim.start_robot(h.portal, "facts.crash")
        crashed = await wait_state(h, "facts.crash", ("dead",))
        assert crashed.log == ["attempt 2 starts"]
        attempts = [(a["attempt"], a["outcome"], a["log"]) for a in crashed.attempt_log]
        assert attempts == [(1, "failed", ["attempt 1 starts"]), (2, "dead", ["attempt 2 starts"])]
        assert "ERROR_METHOD_NOT_FOUND" in crashed.attempt_log[0]["error"]
        calls = h.svc.connections.calls_for(crashed.id)
        assert [(c.target, c.attempt, c.error) for c in calls] == [
            ("crm.nope.get", 1, "ERROR_METHOD_NOT_FOUND"),
            ("crm.nope.get", 2, "ERROR_METHOD_NOT_FOUND"),
        ]
        assert SECRET not in repr(calls) and SECRET not in repr(crashed)


async def test_retry_then_success_keeps_every_attempt(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path) as h:
        fast_retries(h, 5)
        await h.install()
        await h.sim.start_robot(h.portal, "facts.flaky")
        inv = await wait_state(h, "facts.flaky", ("answered", "delivered"))  # nothing waits for it
        assert inv.attempts == 3 and inv.log == ["try 3"]
        assert [(a["attempt"], a["outcome"], a["log"]) for a in inv.attempt_log] == [
            (1, "failed", ["try 1"]),
            (2, "failed", ["try 2"]),
            (3, "answered", ["try 3"]),
        ]
        assert "not yet (1)" in inv.attempt_log[0]["error"] and "not yet (2)" in inv.attempt_log[1]["error"]
        assert all(a["started_at"] <= a["finished_at"] for a in inv.attempt_log)


async def test_stored_robot_exception_keeps_log_version_and_calls(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        fast_retries(h, 1)
        v1 = h.svc.register.save(stored_spec("facts.stored"), STORED_FAILS, author="anna")
        v2 = h.svc.register.save(stored_spec("facts.stored"), STORED_FAILS + "\n# v2\n", author="anna")
        await h.install()
        deal = h.portal.add_deal(TITLE="draft")
        await h.run_robot("facts.stored", document_id=("crm", "CCrmDocumentDeal", f"DEAL_{deal['ID']}"))
        inv = entry(h, "facts.stored")
        assert inv.state == "dead" and inv.attempts == 1 and inv.delivered_at is not None
        assert inv.log == ["stored: reading the deal", "stored: title draft"], inv.log
        assert "the deal is not ready" in inv.error
        assert inv.origin == "stored" and inv.robot_version_id == v2.id != v1.id
        assert inv.ran == {"origin": "stored", "version_id": v2.id, "version": 2, "hash": v2.content_hash}
        calls = h.svc.connections.calls_for(inv.id)
        assert [(c.kind, c.method, c.target, c.status, c.attempt) for c in calls] == [
            ("rest", "call", "crm.deal.get", 200, 1)
        ]


async def test_stored_robot_retry_then_success_and_the_version_that_ran(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.svc.runner.rules = RetryRules(max_attempts=5, base_delay=1.0, max_delay=1.0)
        h.svc.register.save(stored_spec("facts.stored"), STORED_FAILS, author="anna")
        await h.install()
        deal = h.portal.add_deal(TITLE="draft")
        await h.sim.start_robot(h.portal, "facts.stored", document_id=("crm", "CCrmDocumentDeal", f"DEAL_{deal['ID']}"))
        await wait_state(h, "facts.stored", ("failed",))
        h.portal.deals[int(deal["ID"])]["TITLE"] = "ready"
        v2 = h.svc.register.save(stored_spec("facts.stored"), STORED_FAILS + "\n# v2\n", author="anna")
        inv = await wait_state(h, "facts.stored", ("delivered",))
        assert inv.log == ["stored: reading the deal", "stored: title ready"]
        first, second = inv.attempt_log
        assert first["outcome"] == "failed" and first["log"] == ["stored: reading the deal", "stored: title draft"]
        assert first["ran"]["version"] == 1 and second["ran"]["version"] == 2
        assert second["outcome"] == "answered" and inv.robot_version_id == v2.id
        assert [c.attempt for c in h.svc.connections.calls_for(inv.id)] == [1, 2]


async def test_stored_robot_stopped_by_a_limit_keeps_its_log(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.svc.register.save(
            stored_spec("facts.spin"), STORED_SPIN, author="anna", limits={"cpu_seconds": 0.3, "wall_seconds": 5}
        )
        await h.install()
        await h.run_robot("facts.spin")
        inv = entry(h, "facts.spin")
        assert inv.state == "dead" and "limit" in inv.error
        assert inv.log == ["stored: spinning"]
        assert inv.attempt_log[0]["log"] == ["stored: spinning"] and inv.attempt_log[0]["outcome"] == "dead"


async def test_stored_robot_timeout_keeps_its_log(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path) as h:
        h.svc.register.save(
            stored_spec("facts.wait"), STORED_SPIN, author="anna", limits={"cpu_seconds": 5, "wall_seconds": 0.3}
        )
        await h.install()
        await h.run_robot("facts.wait")
        inv = entry(h, "facts.wait")
        assert inv.state == "dead" and "timeout" in inv.error, inv.error
        assert inv.log == ["stored: spinning"]


ISO_LOCAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_jobs_show_and_journal_json_show_the_same_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        fast_retries(h, 2)
        await h.install()
        await h.sim.start_robot(h.portal, "facts.crash")
        crashed = await wait_state(h, "facts.crash", ("dead",))
        env = env_for(h, tmp_path, B24R_APP="tests.test_journal_facts:router")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    shown = runner.invoke(cli, ["jobs", "show", str(crashed.id)])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert doc["ran"]["origin"] == "module" and doc["ran"]["module"] == "tests.test_journal_facts.facts_crash"
    assert [(a["attempt"], a["outcome"], a["log"]) for a in doc["attempt_log"]] == [
        (1, "failed", ["attempt 1 starts"]),
        (2, "dead", ["attempt 2 starts"]),
    ]
    for a in doc["attempt_log"]:
        assert ISO_LOCAL.fullmatch(a["started_at"]) and ISO_LOCAL.fullmatch(a["finished_at"])
    assert [(c["target"], c["attempt"], c["error"]) for c in doc["calls"]] == [
        ("crm.nope.get", 1, "ERROR_METHOD_NOT_FOUND"),
        ("crm.nope.get", 2, "ERROR_METHOD_NOT_FOUND"),
    ]
    assert all(ISO_LOCAL.fullmatch(c["at"]) and c["duration_ms"] > 0 for c in doc["calls"])
    assert SECRET not in shown.output

    listed = runner.invoke(cli, ["journal", "--json"])
    assert listed.exit_code == 0, listed.output
    lines = [json.loads(line) for line in listed.output.splitlines()]
    entry_doc = next(e for e in lines if e["id"] == crashed.id)
    assert "received_at" not in entry_doc and entry_doc["received_at_epoch"] == crashed.received_at
    received = datetime.fromisoformat(entry_doc["received_at_utc"].replace("Z", "+00:00"))
    assert ISO_UTC.fullmatch(entry_doc["received_at_utc"])
    assert abs(received.timestamp() - crashed.received_at) < 0.001 and received.utcoffset() == timedelta(0)
    assert entry_doc["finished_at_epoch"] == crashed.finished_at and ISO_UTC.fullmatch(entry_doc["finished_at_utc"])
    assert entry_doc["delivered_at_epoch"] is None and entry_doc["delivered_at_utc"] is None  # nothing waited
    assert [a["attempt"] for a in entry_doc["attempt_log"]] == [1, 2]
    assert all(ISO_UTC.fullmatch(a["finished_at_utc"]) for a in entry_doc["attempt_log"])
