"""Stored robots use connections through the parent: the real pool, the real server, real far sides.

The sandbox has no network; `ctx.http/onec/sql` in stored code send a request to the parent, which
makes the call through the same hub as a module robot's (declared connections, origin rule, caps,
the run's time budget, the journal of calls) and never hands a secret to the code.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from b24robots.demo.robots import INN_LOOKUP, INN_LOOKUP_SOURCE
from b24robots.robots.spec import RobotSpec
from b24robots.testing import FakeOneCServer
from b24robots.testing.app_fixtures import RobotHarness
from tests.connections.support import SECRET, echo_server
from tests.connections.test_sql import dwh_url  # noqa: F401 - the fixture: SQLite and the suite's PostgreSQL

INN = "7701234567"

# what the code sees of an answer, returned whole: the secret grep covers everything sandbox-visible
HTTP_ROBOT = """
import json


def run(inputs, ctx):
    erp = ctx.http("erp")
    r = erp.get("quiet", params={"inn": inputs["q"]})
    fields = {k: repr(getattr(ctx, k)) for k in dir(ctx) if not k.startswith("_")}
    seen = {"status": r.status, "ok": r.ok, "json": r.json(), "text": r.text, "headers": r.headers,
            "ctx": repr(ctx), "erp": repr(erp), "fields": fields}
    try:
        erp.get("status/404")
    except ctx.ConnectionError as exc:
        seen["error"] = [exc.code, exc.status, str(exc)]
    return {"result": json.dumps(seen, sort_keys=True)}
"""

SQL_ROBOT = """
def run(inputs, ctx):
    row = ctx.sql("dwh").first("select name, balance from counterparties where inn = :inn", inn=inputs["q"])
    rows = ctx.sql("dwh").query("select id from counterparties order by id")
    try:
        ctx.sql("dwh").execute("delete from counterparties")
        wrote = "deleted"
    except ctx.ConnectionError as exc:
        wrote = exc.code
    return {"result": f"{row['name']}|{float(row['balance'])}|{[r['id'] for r in rows]}|{wrote}"}
"""

SLOW = """
def run(inputs, ctx):
    ctx.http("erp").get("slow", params={"s": "10"})
    return {"result": "waited"}
"""

PERSISTENT = """
def run(inputs, ctx):
    while True:
        try:
            ctx.http("erp").get("slow", params={"s": "0.3"})
        except ctx.ConnectionError:
            pass
"""


def spec(code: str, **extra: Any) -> RobotSpec:
    return RobotSpec.from_document(
        {
            "code": code,
            "name": code,
            "use_subscription": "Y",
            "properties": {"q": {"name": "Query"}},
            "return_properties": {"result": {"name": "Result"}},
            **extra,
        }
    )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(data_dir=tmp_path / "srv") as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)
        yield h


def everything_kept(h: RobotHarness, code: str) -> str:
    """Every journal row of the robot's runs and of their calls, as text."""
    rows = []
    for inv in h.svc.journal.recent(robot=code):
        rows.append(json.dumps(inv.__dict__, default=str, ensure_ascii=False))
        rows += [json.dumps(c.__dict__, default=str, ensure_ascii=False) for c in h.svc.connections.calls_for(inv.id)]
    return "\n".join(rows)


async def test_stored_code_calls_an_http_api_and_never_sees_the_secret(
    harness: RobotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with echo_server() as (server, state):
        harness.svc.connections.add(
            "erp", "http", {"base_url": server.origin + "/api/", "auth": "bearer"}, {"token": SECRET}
        )
        harness.svc.register.save(spec("st.http", connections=["erp"]), HTTP_ROBOT, author="anna")
        await harness.install()
        wf = await harness.run_robot("st.http", properties={"q": INN})
        seen = json.loads(wf.return_values["result"])
        assert seen["status"] == 200 and seen["ok"] is True
        assert seen["json"] == {"n": 1, "q": {"inn": INN}} and seen["headers"]["x-far"] == "side"
        assert seen["error"][:2] == ["REMOTE", 404] and "GET /api/status/404 answered 404" in seen["error"][2]
        # the server added the credentials on its side of the wall
        assert state.seen[0]["headers"]["authorization"] == f"Bearer {SECRET}"
        inv = harness.svc.journal.recent(robot="st.http")[0]
        calls = harness.svc.connections.calls_for(inv.id)
        assert [(c.connection, c.method, c.target, c.status) for c in calls] == [
            ("erp", "GET", "/api/quiet", 200),
            ("erp", "GET", "/api/status/404", 404),
        ]
        # the secret grep: sandbox-visible values, the workflow log, journal rows, server log lines
        assert SECRET not in wf.return_values["result"]
        assert all(SECRET not in e.message for e in wf.log)
        assert SECRET not in everything_kept(harness, "st.http")
        assert SECRET not in caplog.text


async def test_the_demo_robot_finds_a_counterparty_in_1c_and_writes_it_to_the_deal(
    harness: RobotHarness, b24_onec: FakeOneCServer
) -> None:
    b24_onec.fake.add("Catalog_Контрагенты", Description="ООО Ромашка", ИНН=INN)
    harness.svc.connections.add(
        "buh", "1c", {"base_url": b24_onec.base_url, "username": b24_onec.fake.username},
        {"password": b24_onec.fake.password},
    )  # fmt: skip
    harness.svc.register.save(RobotSpec.from_document(INN_LOOKUP), INN_LOOKUP_SOURCE, author="demo")
    await harness.install()
    deal = harness.portal.add_deal(TITLE="Order 7")
    wf = await harness.run_robot(
        "demo.inn_lookup", properties={"inn": INN}, document_id=("crm", "CCrmDocumentDeal", f"DEAL_{deal['ID']}")
    )
    assert wf.return_values["name"] == "ООО Ромашка" and wf.return_values["found"] in ("Y", True, "1")
    assert harness.portal.deals[int(deal["ID"])]["COMMENTS"] == f"1C: ООО Ромашка (INN {INN})"
    inv = harness.svc.journal.recent(robot="demo.inn_lookup")[0]
    calls = harness.svc.connections.calls_for(inv.id)
    # the 1C lookup, then the REST call that writes the deal (journaled too, since the journal keeps every call)
    assert [(c.connection, c.method, c.status) for c in calls] == [("buh", "GET", 200), ("bitrix24", "call", 200)]
    assert b24_onec.fake.password not in everything_kept(harness, "demo.inn_lookup")
    # not found: a clear line in the log, the deal untouched
    wf = await harness.run_robot("demo.inn_lookup", properties={"inn": "500100732259"})
    assert any("1C has no counterparty with INN 500100732259" in e.message for e in wf.log)


async def test_stored_code_queries_sql_read_only(harness: RobotHarness, dwh_url: str) -> None:  # noqa: F811
    harness.svc.connections.add("dwh", "sql", {"url": dwh_url})
    harness.svc.register.save(spec("st.sql", connections=["dwh"]), SQL_ROBOT, author="anna")
    await harness.install()
    wf = await harness.run_robot("st.sql", properties={"q": INN})
    # a write in a read-only connection is refused
    assert wf.return_values["result"] == "ООО Ромашка|100.5|[1, 2]|SQL"
    inv = harness.svc.journal.recent(robot="st.sql")[0]
    calls = harness.svc.connections.calls_for(inv.id)
    assert [c.connection for c in calls] == ["dwh"] * 3 and not calls[0].error and calls[2].error
    assert SECRET not in everything_kept(harness, "st.sql")


async def test_time_in_connection_calls_counts_toward_the_wall_limit(harness: RobotHarness) -> None:
    with echo_server() as (server, _):
        harness.svc.connections.add("erp", "http", {"base_url": server.origin + "/api/", "timeout": 30})
        harness.svc.register.save(spec("st.slow", connections=["erp"]), SLOW, author="anna", limits={"wall_seconds": 1})
        await harness.install()
        started = time.monotonic()
        await harness.run_robot("st.slow", properties={"q": ""}, timeout=20)
        took = time.monotonic() - started
        inv = harness.svc.journal.recent(robot="st.slow")[0]
        assert inv.state == "dead", inv.error
        assert took < 8  # the far side would take 10 s
        # the call is cut to the run's time left, so it ends as the wall limit, "no time left" or a timeout
        reasons = ("wall-clock limit", "no time left", "timed out", "did not answer in time")
        assert any(reason in inv.error for reason in reasons), inv.error


async def test_connection_calls_count_toward_the_proxied_time_limit(tmp_path: Path) -> None:
    # B24R_SANDBOX_MAX_PROXIED_SECONDS caps it for every robot; the code catching errors does not help
    async with RobotHarness(data_dir=tmp_path / "srv", settings={"sandbox_max_proxied_seconds": 1.0}) as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)
        with echo_server() as (server, _):
            h.svc.connections.add("erp", "http", {"base_url": server.origin + "/api/", "timeout": 30})
            h.svc.register.save(spec("st.persistent", connections=["erp"]), PERSISTENT, author="anna")
            await h.install()
            started = time.monotonic()
            wf = await h.run_robot("st.persistent", properties={"q": ""}, timeout=20)
            took = time.monotonic() - started
        inv = h.svc.journal.recent(robot="st.persistent")[0]
        assert inv.state == "dead", inv.error
        assert "stopped by the proxied_time limit" in inv.error and "more than 1 s in proxied requests" in inv.error
        assert any("proxied_time" in e.message for e in wf.log)
        assert took < 10  # the wall cap (30 s) never came into it
        calls = h.svc.connections.calls_for(inv.id)
        assert 2 <= len(calls) <= 5 and all(c.connection == "erp" for c in calls)


async def test_a_robot_of_its_own_may_allow_less_proxied_time_and_the_call_gets_only_that(
    harness: RobotHarness,
) -> None:
    with echo_server() as (server, _):
        harness.svc.connections.add("erp", "http", {"base_url": server.origin + "/api/", "timeout": 30})
        harness.svc.register.save(
            spec("st.slow2", connections=["erp"]),
            SLOW,
            author="anna",
            limits={"wall_seconds": 10, "proxied_seconds": 1},
        )
        await harness.install()
        started = time.monotonic()
        await harness.run_robot("st.slow2", properties={"q": ""}, timeout=20)
        took = time.monotonic() - started
    inv = harness.svc.journal.recent(robot="st.slow2")[0]
    assert inv.state == "dead", inv.error
    assert "proxied_time" in inv.error and took < 6  # the far side would take 10 s, the wall limit is 10 s
    [call] = harness.svc.connections.calls_for(inv.id)
    # the call got what was left of the robot's 1 s (less on a loaded machine), never the connection's 30 s
    assert call.error and 0 < call.duration_ms / 1000 <= 1.5
