"""Database faults at the boundaries: a SQLite database locked by another process answers 503 with the
reason, and a worker whose PostgreSQL connections are cut (pg_terminate_backend) goes on.

Both are `StoreUnavailable` from b24robots.store.db, the one place database errors are mapped.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

import b24robots.store.db as store_db
from b24robots import Params, RobotContext, RobotFailure, Router, String
from b24robots.errors import StoreRefused
from b24robots.inbound.formcodec import encode_form
from b24robots.testing import PortalSimulator
from b24robots.testing.app_fixtures import RobotHarness
from tests.conftest import new_pg_database
from tests.pgserver import PostgresServer
from tests.proc_robots import router
from tests.processes import served_sim, start_worker, stop, wait_for

__all__ = ["served_sim"]


def robot_call(h: RobotHarness, token: str) -> bytes:
    inst = h.svc.installations.get(h.portal.member_id)
    pinst = h.portal.installations[h.app.client_id]
    return encode_form(
        {
            "workflow_id": "wf-locked",
            "code": "p.quick",
            "document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"],
            "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
            "event_token": token,
            "properties": {},
            "use_subscription": "N",
            "auth": {
                "domain": inst.domain,
                "member_id": inst.member_id,
                "application_token": pinst.application_token,
            },
        }
    )


async def post_call(h: RobotHarness, token: str) -> tuple[int, dict[str, Any]]:
    async with h.client() as client:
        resp = await client.post(
            "/b24/robot", content=robot_call(h, token), headers={"content-type": "application/x-www-form-urlencoded"}
        )
    return resp.status_code, resp.json()


async def test_a_robot_call_while_another_process_holds_the_write_lock_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite waits BUSY_TIMEOUT_MS for the lock (10 s in production), then says "database is locked"
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_MS", 300)
    db_file = tmp_path / "locked.db"
    async with RobotHarness(router, data_dir=tmp_path, database_url=f"sqlite:///{db_file}", sandbox=False) as h:
        await h.install()
        other = sqlite3.connect(db_file, isolation_level=None)  # another process's connection
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        try:
            status, body = await post_call(h, "locked-1")
            assert status == 503, body
            assert body["error"] == "unavailable" and "database is locked" in body["reason"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert h.svc.journal.recent() == []  # the refused call was not stored
        status, body = await post_call(h, "locked-2")
        assert status == 200 and body["status"] == "queued", body
        await h.until_idle()
        assert h.svc.journal.get(body["id"]).state == "answered"  # the workers went on


@pytest.mark.postgres
async def test_a_worker_whose_postgresql_connections_are_cut_goes_on(
    served_sim: PortalSimulator, tmp_path: Path, pg_server: PostgresServer, pg_template: str
) -> None:
    db_url = new_pg_database(pg_server, pg_template)
    db_name = db_url.rsplit("/", 1)[1]
    async with RobotHarness(
        router, data_dir=tmp_path, database_url=db_url, sim=served_sim, workers=False, sandbox=False
    ) as h:
        await h.install()
        worker = await start_worker(h, db_url, tmp_path)
        try:
            first = await served_sim.start_robot(h.portal, "p.quick")
            await first.closed(timeout=90)  # the worker process starts first (slow on a loaded machine)
            cut = 0
            for _ in range(2):  # twice: once idle, once right after a call arrived
                with psycopg.connect(pg_server.url().replace("+psycopg", ""), autocommit=True) as admin:
                    rows = admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()",
                        (db_name,),
                    ).fetchall()
                cut += sum(1 for (done,) in rows if done)
                wf = await served_sim.start_robot(h.portal, "p.quick")
                await wf.closed(timeout=30)
                assert worker.poll() is None, "the worker survived"
            assert cut > 0, "no connection of the worker was cut"
            await wait_for(lambda: {i.state for i in h.svc.journal.recent()} == {"delivered"}, 30)
            assert len(h.svc.journal.recent()) == 3
            assert all(i.attempts == 1 for i in h.svc.journal.recent())
        finally:
            stop(worker)
        assert worker.returncode == 0
        assert worker.stderr is not None
        log = worker.stderr.read().decode()
        assert "Traceback" not in log or "StoreUnavailable" in log, log[-2000:]


@pytest.mark.postgres
async def test_a_call_postgresql_cannot_hold_is_a_400_and_its_group_is_stored(
    tmp_path: Path, pg_server: PostgresServer, pg_template: str
) -> None:
    # PostgreSQL text cannot hold NUL (psycopg: DataError); that is this call's data, not a database outage
    db_url = new_pg_database(pg_server, pg_template)
    async with RobotHarness(router, data_dir=tmp_path, database_url=db_url, sandbox=False, workers=False) as h:
        await h.install()
        answers = await asyncio.gather(*(post_call(h, f"nul-{i}" + ("\x00" if i == 3 else "")) for i in range(8)))
        for i, (status, body) in enumerate(answers):
            if i == 3:
                assert status == 400 and body["error"] == "bad_request", body
                assert "NUL" in body["reason"]
            else:
                assert status == 200 and body["status"] == "queued", (i, body)
        assert len(h.svc.journal.recent()) == 7
        assert h.svc.db.health() == (True, "")  # /healthz stays green


def test_an_integer_sqlite_cannot_hold_is_refused_data_not_an_outage(sqlite_db: store_db.Database) -> None:
    with sqlite_db.write() as s:
        s.execute(text("CREATE TABLE wide (x INTEGER)"))
    with pytest.raises(StoreRefused, match="too large"), sqlite_db.write() as s:
        s.execute(text("INSERT INTO wide VALUES (:x)"), {"x": 10**30})
    assert sqlite_db.health() == (True, "")
    with sqlite_db.write() as s:
        s.execute(text("INSERT INTO wide VALUES (:x)"), {"x": 2**63 - 1})


nul_router = Router()


class NulOut(Params):
    text = String("Text")


@nul_router.robot("n.nul", name="Fails with a NUL", outputs=NulOut)
def fails_with_nul(ctx: RobotContext) -> NulOut:
    ctx.log("about to fail with a NUL")
    raise RobotFailure("the ERP said a\x00b")  # the error and the portal's log message are text columns


@pytest.mark.postgres
async def test_an_outcome_postgresql_cannot_hold_fails_the_run_once(
    tmp_path: Path, pg_server: PostgresServer, pg_template: str
) -> None:
    # before: the refused write counted as an outage and was retried in place for ever (the lease kept
    # alive, the portal never told); now the run fails once with the reason
    db_url = new_pg_database(pg_server, pg_template)
    async with RobotHarness(nul_router, data_dir=tmp_path, database_url=db_url, sandbox=False) as h:
        await h.install()
        wf = await h.run_robot("n.nul")
        (inv,) = h.svc.journal.recent()
        assert inv.state == "dead" and inv.attempts == 1 and inv.deliver_attempts == 1
        assert inv.error == "the outcome could not be stored: PostgreSQL text fields cannot contain NUL (0x00) bytes"
        assert inv.log == [] and inv.outputs == {}
        assert wf.closed_by == "event" and "could not be stored" in str(wf.log)
        assert wf.closed_by == "event" and "could not be stored" in str(wf.log)
