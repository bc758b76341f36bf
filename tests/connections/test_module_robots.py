"""Module robots use connections in-process: end to end through the simulator, the fake 1C and a real DB."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from b24robots import Params, RobotContext, Router, String
from b24robots.testing import FakeOneCServer
from b24robots.testing.app_fixtures import RobotHarness

router = Router()
INN = "7701234567"


class InnIn(Params):
    inn = String("INN", required=True)


class NameOut(Params):
    name = String("Name")
    source = String("Source")


@router.robot("conn.onec_lookup", name="1C lookup", inputs=InnIn, outputs=NameOut, connections=["buh"])
def onec_lookup(inputs: InnIn, ctx: RobotContext) -> NameOut:
    found = ctx.onec("buh").first("Catalog_Контрагенты", filter={"ИНН": inputs.inn})
    ctx.log(f"1C: {'found' if found else 'nothing'} for {inputs.inn}")
    return NameOut(name=found["Description"] if found else "", source="1c")


@router.robot("conn.sql_lookup", name="SQL lookup", inputs=InnIn, outputs=NameOut, connections=["dwh"])
async def sql_lookup(inputs: InnIn, ctx: RobotContext) -> NameOut:
    import asyncio

    row = await asyncio.to_thread(ctx.sql("dwh").first, "select name from cp where inn = :inn", inn=inputs.inn)
    return NameOut(name=row["name"] if row else "", source="sql")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(router, data_dir=tmp_path / "srv", sandbox=False) as h:
        await h.install()
        yield h


def add_buh(h: RobotHarness, server: FakeOneCServer, *, per_portal: bool = False) -> None:
    store = h.svc.connections
    if per_portal:
        store.add("buh", "1c", {"username": server.fake.username}, {"password": server.fake.password})
        store.set("buh", {"base_url": server.base_url}, member_id=h.portal.member_id)
    else:
        store.add("buh", "1c", {"base_url": server.base_url, "username": "odata"}, {"password": server.fake.password})


async def test_a_module_robot_looks_up_1c_and_the_call_is_journaled(
    harness: RobotHarness, b24_onec: FakeOneCServer
) -> None:
    b24_onec.fake.add("Catalog_Контрагенты", Description="ООО Ромашка", ИНН=INN)
    add_buh(harness, b24_onec, per_portal=True)
    wf = await harness.run_robot("conn.onec_lookup", properties={"inn": INN})
    assert wf.return_values["name"] == "ООО Ромашка"
    inv = harness.svc.journal.recent(robot="conn.onec_lookup")[0]
    calls = harness.svc.connections.calls_for(inv.id)
    assert [(c.connection, c.method, c.status) for c in calls] == [("buh", "GET", 200)]
    assert calls[0].target == "/demo/odata/standard.odata/Catalog_Контрагенты" and calls[0].bytes > 0
    metrics = harness.svc.metrics.render().decode()
    assert 'b24robots_connection_call_seconds_count{connection="buh",kind="1c",outcome="ok"} 1.0' in metrics


async def test_an_async_module_robot_queries_sql(harness: RobotHarness, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "dwh.db") as conn:
        conn.execute("create table cp (inn text, name text)")
        conn.execute("insert into cp values (?, ?)", (INN, "ООО Ромашка"))
    harness.svc.connections.add("dwh", "sql", {"url": f"sqlite:///{tmp_path / 'dwh.db'}"})
    wf = await harness.run_robot("conn.sql_lookup", properties={"inn": INN})
    assert (wf.return_values["name"], wf.return_values["source"]) == ("ООО Ромашка", "sql")


async def test_far_side_5xx_is_retried_then_reported(harness: RobotHarness, b24_onec: FakeOneCServer) -> None:
    add_buh(harness, b24_onec)
    b24_onec.fake.fail_next(503, "-1", "Сервер 1С перегружен")
    harness.svc.runner.rules = type(harness.svc.runner.rules)(max_attempts=1)
    wf = await harness.run_robot("conn.onec_lookup", properties={"inn": INN})
    inv = harness.svc.journal.recent(robot="conn.onec_lookup")[0]
    assert "answered 503: 1C error -1: Сервер 1С перегружен" in inv.error
    assert any("Сервер 1С перегружен" in e.message for e in wf.log)
    assert [c.status for c in harness.svc.connections.calls_for(inv.id)] == [503]
