"""Group commit of robot calls: no ack before the commit, a failed commit fails its whole group, dedupe."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from b24robots import Params, Router, String
from b24robots.errors import StoreError
from b24robots.inbound.formcodec import encode_form
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.group_commit import GroupWriter
from b24robots.store.installations import Installations, InstallGrant
from b24robots.store.journal import QUEUED, NewInvocation
from b24robots.store.models import InvocationRow
from b24robots.testing.app_fixtures import RobotHarness
from tests.test_pipeline_intake import body_for

router = Router()


class In(Params):
    text = String("Text", required=True)


@router.robot("g.echo", name="Echo", inputs=In, outputs=In)
def echo(inputs: In) -> In:
    return In(text=inputs.text)


class CommitGate:
    """An engine `commit` hook for the intake writer's thread only: holds each commit until released,
    and can make it fail the way a full disk does."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.commits = 0
        event.listen(db.engine, "commit", self)

    def __call__(self, conn: Any) -> None:
        if threading.current_thread().name != "b24r-intake-writer":
            return
        self.commits += 1
        self.entered.set()
        assert self.release.wait(10), "the test never released the commit"
        if self.fail:
            raise sqlite3.OperationalError("database or disk is full")

    def remove(self) -> None:
        event.remove(self.db.engine, "commit", self)


def stored(db: Database, prefix: str) -> int:
    with db.read() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(InvocationRow).where(InvocationRow.event_token.like(prefix + "%"))
            )
            or 0
        )


@pytest.fixture
async def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False, workers=False) as harness:
        await harness.install()
        yield harness


async def post(h: RobotHarness, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with h.client() as client:
        resp = await client.post(
            "/b24/robot", content=encode_form(body), headers={"content-type": "application/x-www-form-urlencoded"}
        )
    return resp.status_code, resp.json()


def calls(h: RobotHarness, prefix: str, n: int) -> list[dict[str, Any]]:
    return [body_for(h, code="g.echo", event_token=f"{prefix}{i}", properties={"text": str(i)}) for i in range(n)]


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_no_call_is_answered_before_its_group_committed(h: RobotHarness) -> None:
    gate = CommitGate(h.svc.db)
    try:
        tasks = [asyncio.create_task(post(h, b)) for b in calls(h, "held.", 8)]
        await asyncio.to_thread(gate.entered.wait, 5)
        # the writer sits in COMMIT; the other calls queue behind it: nobody has an answer yet
        await wait_for(lambda: h.svc.intake_writer.submitted == 8)  # every call has reached the writer
        await asyncio.sleep(0.05)  # an answer given before the commit would have reached its caller
        assert not any(t.done() for t in tasks)
        assert stored(h.svc.db, "held.") == 0  # nothing is visible to other connections either
        gate.release.set()
        answers = await asyncio.gather(*tasks)
    finally:
        gate.release.set()
        gate.remove()
    assert [(s, b["status"]) for s, b in answers] == [(200, "queued")] * 8
    assert stored(h.svc.db, "held.") == 8
    assert len({b["id"] for _, b in answers}) == 8
    # the calls that waited behind the first commit went in together, not one transaction each
    assert gate.commits < 8


async def test_a_failed_commit_answers_503_to_its_whole_group_and_stores_none(h: RobotHarness) -> None:
    gate = CommitGate(h.svc.db)
    bodies = calls(h, "lost.", 6)
    try:
        gate.fail = True
        first = asyncio.create_task(post(h, bodies[0]))
        await asyncio.to_thread(gate.entered.wait, 5)
        rest = [asyncio.create_task(post(h, b)) for b in bodies[1:]]
        # the other five are queued while the first commit is held: they form the next group
        await wait_for(lambda: h.svc.intake_writer._queue.qsize() == 5)
        gate.release.set()
        answers = [await first, *await asyncio.gather(*rest)]
        assert gate.commits == 2  # two groups: the first call, then the five together
    finally:
        gate.release.set()
        gate.remove()
    assert [s for s, _ in answers] == [503] * 6
    assert all("nothing was stored" in b["reason"] for _, b in answers)
    assert stored(h.svc.db, "lost.") == 0
    # the writer lives on, and the same calls are new to it: none of them was half-stored
    again = await asyncio.gather(*(post(h, b) for b in bodies))
    assert [(s, b["status"]) for s, b in again] == [(200, "queued")] * 6
    assert stored(h.svc.db, "lost.") == 6


async def test_a_token_twice_in_one_group_and_across_groups_is_stored_once(h: RobotHarness) -> None:
    gate = CommitGate(h.svc.db)
    body = calls(h, "twice.", 1)[0]
    try:
        first = asyncio.create_task(post(h, calls(h, "other.", 1)[0]))
        await asyncio.to_thread(gate.entered.wait, 5)
        same = [asyncio.create_task(post(h, body)) for _ in range(3)]  # one group, one token
        await wait_for(lambda: h.svc.intake_writer._queue.qsize() == 3)
        gate.release.set()
        await first
        answers = await asyncio.gather(*same)
    finally:
        gate.release.set()
        gate.remove()
    assert sorted(b["status"] for _, b in answers) == ["duplicate", "duplicate", "queued"]
    assert len({b["id"] for _, b in answers}) == 1
    later = await post(h, body)  # a later group
    assert later == (200, {"status": "duplicate", "id": answers[0][1]["id"]})
    assert stored(h.svc.db, "twice.") == 1


def new_call(installation_id: int, token: str) -> NewInvocation:
    return NewInvocation(
        event_token=token,
        installation_id=installation_id,
        robot_code="g.echo",
        origin="module",
        robot_version_id=None,
        workflow_id="wf",
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        use_subscription=True,
        timeout_duration=0,
        portal_ts=0,
        auth_user_id=1,
        properties={"text": "x"},
        inputs={"text": "x"},
    )


def test_group_writer_on_both_databases(db: Database) -> None:
    """Groups, dedupe and a refused row on SQLite and PostgreSQL; two writers (two web processes) meet
    at the unique index."""
    inst = Installations(db, Vault(b"k")).install(
        InstallGrant(
            member_id="m" * 32,
            domain="p.example",
            access_token="x" * 32,
            refresh_token="y" * 32,
            expires_at=time.time() + 3600,
            application_token="a" * 32,
            client_endpoint="https://p.example/rest/",
            server_endpoint="https://oauth.example/rest/",
        )
    )
    one, two = GroupWriter(db), GroupWriter(db)
    try:
        futures = [w.submit(new_call(inst.id, f"t{i % 50}")) for i in range(200) for w in (one, two)]
        results = [f.result(10) for f in futures]
        assert sum(created for _, created in results) == 50
        by_token: dict[str, set[int]] = {}
        for i, (row_id, _) in enumerate(results):
            by_token.setdefault(f"t{(i // 2) % 50}", set()).add(row_id)
        assert all(len(ids) == 1 for ids in by_token.values())
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(InvocationRow)) == 50
            assert set(s.scalars(select(InvocationRow.state))) == {QUEUED}
        assert one.groups + two.groups < 400
        # a row the schema refuses (no such installation) fails alone; the rest of its group is stored
        futures = [one.submit(new_call(inst.id, "ok1")), one.submit(new_call(999_999, "bad")),
                   one.submit(new_call(inst.id, "ok2"))]  # fmt: skip
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(10)[1])
            except StoreError:
                outcomes.append(None)
        assert outcomes == [True, None, True]
    finally:
        one.close()
        two.close()


def test_every_column_reads_back_as_it_was_given_on_both_databases(db: Database) -> None:
    """The PostgreSQL group insert sends the rows as one JSON text: numbers, None, booleans, unicode, nested
    JSON and quotes must come back exactly, and a dead call's columns as the intake wrote them."""
    vault = Vault(b"k")
    inst = Installations(db, vault).install(
        InstallGrant(
            member_id="m" * 32,
            domain="p.example",
            access_token="x" * 32,
            refresh_token="y" * 32,
            expires_at=time.time() + 3600,
            application_token="a" * 32,
            client_endpoint="https://p.example/rest/",
            server_endpoint="https://oauth.example/rest/",
        )
    )
    odd = 'ж "q" \\ \u2028 \U0001f600 \\u0000'
    new = NewInvocation(
        event_token=f"tok|{odd}",
        installation_id=inst.id,
        robot_code="g.echo",
        origin="stored",
        robot_version_id=7,
        workflow_id=odd,
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        document_type=["lists", "BizprocDocument", "iblock_12"],
        use_subscription=False,
        timeout_duration=3600,
        portal_ts=1796282049,
        auth_user_id=None,
        properties={"a": [1, 2.5, None, True, {"b": odd}], "": ""},
        inputs=None,
        caller_token="c" * 70,
        caller_expires_at=1796285649.25,
    )
    writer = GroupWriter(db, seal=vault.encrypt)
    try:
        now = 1796282049.123456789
        queued = writer.submit(new, now=now)
        dead = writer.submit(
            replace(new, event_token="dead"), state="dead", error=odd, log_message="bad", outputs={"x": 0.1}, now=now
        )
        ids = [queued.result(10)[0], dead.result(10)[0]]
    finally:
        writer.close()
    with db.read() as s:
        rows = {r.id: r for r in s.scalars(select(InvocationRow).where(InvocationRow.id.in_(ids)))}
    row = rows[ids[0]]
    assert (row.event_token, row.workflow_id, row.origin, row.robot_version_id) == (f"tok|{odd}", odd, "stored", 7)
    assert (row.document_type, row.use_subscription, row.timeout_duration) == (new.document_type, False, 3600)
    assert (row.portal_ts, row.auth_user_id, row.properties, row.inputs) == (1796282049, None, new.properties, None)
    assert (row.outputs, row.log, row.state, row.attempts, row.error) == (None, [], QUEUED, 0, "")
    assert row.received_at == row.run_after == now and row.deadline_at == 1796282049.0 + 3600
    assert row.deliver_after is None and row.finished_at is None
    # the run-as user's token is stored encrypted, its expiry as given
    assert row.caller_token and "c" * 16 not in row.caller_token and vault.decrypt(row.caller_token) == "c" * 70
    assert row.caller_expires_at == 1796285649.25
    row = rows[ids[1]]
    assert (row.state, row.error, row.log_message, row.outputs) == ("dead", odd, "bad", {"x": 0.1})
    assert row.finished_at == now and row.deliver_after is None  # no subscription: nothing owed
    assert row.caller_token is None and row.caller_expires_at is None  # a call that never runs keeps no token
