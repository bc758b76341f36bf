"""Retention on SQLite and PostgreSQL: only finished entries past their period go, in small batches;
`b24robots journal prune [--dry-run]`; the background pruner next to a running intake."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from b24robots.cli import app
from b24robots.jobs.pruner import Pruner
from b24robots.store.db import Database
from b24robots.store.journal import Journal
from b24robots.store.retention import DAY, Retention, RetentionPeriods, database_size
from b24robots.testing.app_fixtures import RobotHarness
from tests.proc_robots import router
from tests.test_store_journal import install, new

NOW = 1_000 * DAY


def _finished(j: Journal, iid: int, token: str, *, at: float, how: str, **over: object) -> int:
    inv_id, _ = j.enqueue(new(iid, token, **over), now=at)
    (inv,) = j.claim("W", 1, lease=30, now=at)
    if how in ("kill", "kill_owed"):
        j.kill(inv.id, "W", error="boom", log=[], log_message="m", outputs={}, now=at)
    else:
        j.finish(inv.id, "W", outputs={}, log=[], error="business" if how == "failure" else "", now=at)
    if how in ("ok", "failure", "kill"):  # the answer (or the dead notice) reached the portal
        j.claim_deliveries(iid, "S", limit=50, lease=60, now=at)
        j.delivered([inv.id], "S", now=at)
    return inv_id


def _journal_of_every_kind(db: Database) -> tuple[Journal, dict[str, int]]:
    j = Journal(db)
    iid = install(db)
    ids: dict[str, int] = {}
    for age in (31, 29):  # days before NOW
        at = NOW - age * DAY
        ids[f"delivered{age}"] = _finished(j, iid, f"d{age}", at=at, how="ok")
        ids[f"no_answer{age}"] = _finished(j, iid, f"n{age}", at=at, how="none", use_subscription=False)
        ids[f"failure{age}"] = _finished(j, iid, f"f{age}", at=at, how="failure")
        ids[f"dead{age}"] = _finished(j, iid, f"x{age}", at=at, how="kill")
    old = NOW - 400 * DAY
    ids["failure91"] = _finished(j, iid, "f91", at=NOW - 91 * DAY, how="failure")
    ids["dead91"] = _finished(j, iid, "x91", at=NOW - 91 * DAY, how="kill")
    # still in flight, however old: never deleted
    ids["owed"] = _finished(j, iid, "owed", at=old, how="owed")  # answered, answer not yet delivered
    ids["dead_owed"] = _finished(j, iid, "dead_owed", at=old, how="kill_owed")
    ids["queued"], _ = j.enqueue(new(iid, "q"), now=old)
    ids["failed"], _ = j.enqueue(new(iid, "r"), now=old)
    j.claim("W", 5, lease=30, now=old)  # queued and failed are claimed: running, r goes back as failed
    j.retry_later(ids["failed"], "W", delay=60, error="try again", log=[], now=old)
    j.release("W")  # the queued one is back in the queue
    return j, ids


def test_prune_deletes_only_finished_entries_past_their_period(db: Database) -> None:
    j, ids = _journal_of_every_kind(db)
    # the kill above for dead_owed keeps its notice owed (claimed but never delivered)
    assert j.get(ids["dead_owed"]).owed and j.get(ids["owed"]).owed
    retention = Retention(db, RetentionPeriods())
    dry = retention.prune(now=NOW, batch=2, dry_run=True)
    assert dry.deleted == {"delivered": 2, "failed": 1, "dead": 1} and len(j.recent(limit=100)) == len(ids)
    report = retention.prune(now=NOW, batch=2)  # two entries per transaction
    assert report.deleted == {"delivered": 2, "failed": 1, "dead": 1}
    left = {i.id for i in j.recent(limit=100)}
    gone = {ids["delivered31"], ids["no_answer31"], ids["failure91"], ids["dead91"]}
    assert left == set(ids.values()) - gone
    assert retention.prune(now=NOW).total == 0
    # shorter periods: the 31-day-old failure and dead entries go as well, the rest stays
    short = Retention(db, RetentionPeriods(delivered_days=30, failed_days=30, dead_days=30))
    assert short.prune(now=NOW).deleted == {"delivered": 0, "failed": 1, "dead": 1}
    for key in ("owed", "dead_owed", "queued", "failed", "delivered29", "failure29", "dead29", "no_answer29"):
        j.get(ids[key])  # still there


def test_journal_prune_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24R_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("B24R_SECRET_KEY", "k")
    monkeypatch.setenv("B24R_RETENTION_DELIVERED_DAYS", "10")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    cli.invoke(app, ["journal"])  # creates and migrates the database
    db = Database(f"sqlite:///{tmp_path / 'data' / 'b24robots.db'}")
    j = Journal(db)
    iid = install(db)
    now = time.time()
    for n in range(3):
        _finished(j, iid, f"old{n}", at=now - 11 * DAY, how="ok")
    _finished(j, iid, "new", at=now - 9 * DAY, how="ok")
    dry = cli.invoke(app, ["journal", "prune", "--dry-run"])
    assert dry.exit_code == 0 and "would delete 3 delivered (older than 10 days), 0 failed (90 days)" in dry.output
    assert "database size:" in dry.output and len(j.recent()) == 4
    done = cli.invoke(app, ["journal", "prune"])
    assert done.exit_code == 0 and "deleted 3 delivered" in done.output
    assert [i.event_token for i in j.recent()] == ["new"]
    listed = cli.invoke(app, ["journal", "--status", "delivered"])
    assert listed.exit_code == 0 and listed.output.startswith("id\treceived\t")  # piped: tab-separated
    assert [line.split("\t")[4] for line in listed.output.splitlines()[1:]] == ["delivered"]


def test_database_size_follows_the_file(db: Database) -> None:
    size = database_size(db)
    assert size is not None and size > 0
    j = Journal(db)
    iid = install(db)
    for n in range(300):
        j.enqueue(new(iid, f"t{n}", properties={"pad": secrets.token_hex(1000)}))
    grown = database_size(db)
    assert grown is not None and grown > size + 300 * 2000


async def test_the_pruner_deletes_in_batches_while_the_intake_keeps_accepting(tmp_path: Path) -> None:
    async with RobotHarness(router, data_dir=tmp_path, workers=False, sandbox=False) as h:
        await h.install()
        j = h.svc.journal
        iid = h.svc.installations.all()[0].id
        old = time.time() - 40 * DAY
        with h.svc.db.write() as s:  # 5,000 delivered entries from 40 days ago, written in bulk
            from b24robots.store.models import InvocationRow

            for n in range(5000):
                s.add(
                    InvocationRow(
                        **{
                            **_row_fields(iid, f"old{n}"),
                            "state": "delivered",
                            "received_at": old,
                            "run_after": old,
                            "finished_at": old,
                            "delivered_at": old,
                        }
                    )
                )
        pruner = Pruner(h.svc.retention, interval=3600, batch=200, pause=0.01)
        prune = asyncio.create_task(pruner.prune_once())
        workflows = []
        while not prune.done():  # robot calls arrive while the pruner deletes
            workflows.append(await h.sim.start_robot(h.portal, "p.quick"))
            await asyncio.sleep(0.005)
        report = await prune
        statuses = [wf.delivery.status_code for wf in workflows if wf.delivery is not None]
        assert report.deleted["delivered"] == 5000 and len(workflows) >= 5
        assert statuses == [200] * len(workflows)  # every call was accepted meanwhile
        assert len(j.recent(limit=10_000)) == len(workflows)


def _row_fields(iid: int, token: str) -> dict[str, object]:
    return dict(
        event_token=token,
        installation_id=iid,
        robot_code="p.quick",
        origin="module",
        workflow_id="w",
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        use_subscription=True,
        timeout_duration=0,
        portal_ts=0,
        properties={},
        log=[],
        attempts=1,
        deliver_attempts=1,
        error="",
    )
