"""What the intake keeps in memory (accepted tokens, CODE -> robot) never outlives a change."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from b24robots import Params, Router, String
from b24robots.jobs.wakeup import PgListener
from b24robots.robots.spec import RobotSpec
from b24robots.store.db import Database
from b24robots.store.register import DISABLED, Register
from b24robots.testing.app_fixtures import RobotHarness
from tests.test_group_commit import post
from tests.test_pipeline_intake import body_for

router = Router()


class In(Params):
    text = String("Text", required=True)


@router.robot("c.echo", name="Echo", inputs=In, outputs=In)
def echo(inputs: In) -> In:
    return In(text=inputs.text)


@pytest.fixture
async def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    # a TTL far longer than the test: only invalidation can make a change visible
    async with RobotHarness(
        router, data_dir=tmp_path, sandbox=False, workers=False, settings={"cache_seconds": 600}
    ) as harness:
        await harness.install()
        yield harness


def call(h: RobotHarness, token: str, code: str = "c.echo") -> dict[str, Any]:
    return body_for(h, code=code, event_token=token, properties={"text": token})


async def test_uninstall_is_refused_at_once_and_a_reinstall_accepted_at_once(h: RobotHarness) -> None:
    assert (await post(h, call(h, "a1")))[0] == 200
    assert (await post(h, call(h, "a2")))[0] == 200  # the second one comes from memory
    old = call(h, "a3")
    await h.sim.uninstall_app(h.app, h.portal)
    status, body = await post(h, old)
    assert (status, body["error"]) == (403, "forbidden")
    assert "uninstalled" in body["reason"]
    await h.install()
    status, body = await post(h, call(h, "a4"))
    assert (status, body["status"]) == (200, "queued")


async def test_a_changed_application_token_is_accepted_at_once_and_the_old_one_refused(h: RobotHarness) -> None:
    old = call(h, "t1")
    assert (await post(h, old))[0] == 200
    await h.sim.update_app(h.app, h.portal, new_application_token=True)
    await h.svc.wait_syncs()
    status, body = await post(h, call(h, "t2"))  # body_for reads the portal's new token
    assert (status, body["status"]) == (200, "queued")
    status, _ = await post(h, {**old, "event_token": "t3"})
    assert status == 403


async def test_a_register_change_is_resolved_by_the_next_call(h: RobotHarness) -> None:
    status, body = await post(h, call(h, "r1", "c.new"))
    assert body["status"] == "rejected"  # not declared: journaled dead, the portal is answered
    spec = RobotSpec(code="c.new", name="New")
    h.svc.register.save(spec, "def run(inputs, ctx):\n    return {}\n", author="anna")
    status, body = await post(h, call(h, "r2", "c.new"))
    assert (status, body["status"]) == (200, "queued")
    assert h.svc.journal.get(body["id"]).origin == "stored"
    h.svc.register.set_state("c.new", DISABLED, actor="anna")
    status, body = await post(h, call(h, "r3", "c.new"))
    assert body["status"] == "rejected"
    assert "disabled" in h.svc.journal.get(body["id"]).error


@pytest.mark.postgres
def test_another_process_sees_a_register_change_through_notify(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("across processes on SQLite only the TTL applies")
    other = Database(db.url)  # another web process: its own engines and caches
    listener = PgListener(other.url, on_cache_change=other.invalidate_caches)
    listener.start()
    try:
        mine, theirs = Register(db, cache_seconds=600), Register(other, cache_seconds=600)
        assert theirs.active("c.far") is None  # cached: not stored
        time.sleep(0.5)  # the listener is listening
        mine.save(RobotSpec(code="c.far", name="Far"), "def run(inputs, ctx):\n    return {}\n", author="anna")
        deadline = time.monotonic() + 5
        while theirs.active("c.far") is None:
            assert time.monotonic() < deadline, "the other process never heard of the change"
            time.sleep(0.02)
    finally:
        listener.stop()
        other.dispose()
