"""One async boundary: the server's own code never uses the database on the event loop.

A database read or write blocks (a contended SQLite write waits for the lock, a PostgreSQL round
trip takes its time), and on the event loop every request and every worker task would wait with
it. So the server's async code reaches the stores through a thread (`asyncio.to_thread`,
`run_in_threadpool`); only the intake's in-memory fast path runs on the loop, and it refuses any
database use (`store.db.memory_only`). This test drives a whole day's work over HTTP (install and
sync, robot calls answered, a trigger fired through the API, admin pages, a re-sync) and records
every database use made on the loop by code of the server (`src/b24robots`, apart from the CLI,
which runs its own loop in its own process, and the `testing` package).
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from b24robots.store import db as store_db
from b24robots.store.users import Users
from b24robots.testing import automation
from b24robots.testing.app_fixtures import RobotHarness
from tests.test_triggers import router
from tests.ui_helpers import sign_in

_STORE_CALLS = ("read", "write", "write_core", "changing_cached")


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return not store_db._MEMORY_ONLY.get()  # the fast path's attempt is refused before any I/O


def _caller() -> str | None:
    """The first frame outside the store (and contextlib) that asked for the database, when it is the server's."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        name = frame.filename.replace("\\", "/")
        if "/b24robots/store/" in name or name.endswith("contextlib.py"):
            continue
        if "/src/b24robots/" in name and "/b24robots/testing/" not in name and "/b24robots/cli/" not in name:
            return f"{name.split('/src/')[-1]}:{frame.lineno} {frame.name}"
        return None
    return None


@pytest.fixture
def on_loop_uses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every use of the database on the event loop by the server's code, while the test runs."""
    seen: list[str] = []
    for name in _STORE_CALLS:
        original = getattr(store_db.Database, name)

        def audited(self: store_db.Database, *args: Any, _original: Any = original, **kwargs: Any) -> Iterator[Any]:
            if _on_loop() and (where := _caller()) is not None:
                seen.append(where)
            with _original(self, *args, **kwargs) as handle:
                yield handle

        monkeypatch.setattr(store_db.Database, name, contextmanager(audited))
    return seen


async def test_a_days_work_uses_the_database_off_the_event_loop(tmp_path: Path, on_loop_uses: list[str]) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()  # ONAPPINSTALL, event binding, the first sync
        deal_id = int(h.portal.add_deal()["ID"])
        automation.add_rule(h.sim, "payment.received", portal=h.portal, stage="WON", robot="t.note")
        inst = h.svc.installations.get(h.portal.member_id)
        _key, secret = h.svc.apikeys.create("1C", inst.id, triggers=["payment.received"])
        Users(h.svc.db).create("anna", "correct horse battery")
        async with h.client() as c:
            fired = await c.post(
                "/api/v1/triggers/payment.received/fire",
                json={"entity": f"DEAL_{deal_id}"},
                headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "pay-1"},
            )
            assert fired.status_code == 202, fired.text
            await h.until_idle(20)  # the fire delivered, the rule ran the robot, its answer delivered
            csrf = await sign_in(c)
            for page in ("/admin/dashboard", "/admin/robots", "/admin/portals", "/admin/journal", "/admin/triggers"):
                assert (await c.get(page)).status_code == 200, page
            assert (await c.get("/admin/connections/new")).status_code == 200
            resynced = await c.post("/admin/actions/sync", data={"csrf": csrf, "next": "/admin/robots"})
            assert resynced.status_code == 303, resynced.text
        assert h.portal.deals[deal_id]["STAGE_ID"] == "WON"
    assert on_loop_uses == [], "database used on the event loop by:\n" + "\n".join(sorted(set(on_loop_uses)))


async def test_a_cached_read_stays_on_the_loop_and_a_database_read_goes_to_a_thread(
    sqlite_db: store_db.Database,
) -> None:
    loop_thread = threading.get_ident()

    def cached() -> int:
        return threading.get_ident()

    def from_the_database() -> int:
        with sqlite_db.read() as s:
            s.execute(text("SELECT 1"))
        return threading.get_ident()

    assert await store_db.read_off_loop(cached) == loop_thread
    assert await store_db.read_off_loop(from_the_database) != loop_thread
