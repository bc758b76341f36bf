"""Changes to connections and API keys reach the audit log, in the name of who made them, never with a secret.

Through the admin UI over HTTP (the audit page shows them) and the CLI as a user runs it (a real
subprocess on a real SQLite file).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from b24robots.store.audit import Audit, AuditEntry
from b24robots.store.db import Database
from b24robots.store.users import Users
from b24robots.testing.app_fixtures import RobotHarness
from tests.connections.support import SECRET
from tests.test_triggers import router
from tests.test_ui_cli import run
from tests.ui_helpers import PASSWORD, csrf_of, sign_in

OTHER_SECRET = "0ther-Secret-Value-42"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(router, data_dir=tmp_path / "srv", workers=False, sandbox=False) as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        yield h


def dump(entries: list[AuditEntry]) -> str:
    return json.dumps([e.__dict__ for e in entries], ensure_ascii=False)


async def test_connection_and_api_key_changes_in_the_ui_are_audited_without_secrets(harness: RobotHarness) -> None:
    member = harness.portal.member_id
    async with harness.client() as c:
        csrf = await sign_in(c)
        form = {"csrf": csrf, "kind": "http", "name": "erp", "portal": "", "set.base_url": "http://127.0.0.1:9/api/"}
        added = await c.post("/admin/connections", data={**form, "set.auth": "bearer", "secret.token": SECRET})
        assert added.status_code == 303, added.text
        changed = await c.post(
            "/admin/connections/erp",
            data={"csrf": csrf, "portal": member, "set.timeout": "5", "secret.token": OTHER_SECRET},
        )
        assert changed.status_code == 303
        dropped = await c.post("/admin/connections/erp/delete", data={"csrf": csrf, "portal": member})
        assert dropped.status_code == 303
        deleted = await c.post("/admin/connections/erp/delete", data={"csrf": csrf, "portal": ""})
        assert deleted.status_code == 303
        keys = await c.get("/admin/api-keys")
        created = await c.post(
            "/admin/api-keys",
            data={
                "csrf": csrf_of(keys.text),
                "name": "1C",
                "portal": harness.portal.domain,
                "trigger": "order.shipped",
            },
        )
        assert created.status_code == 201, created.text
        plaintext = re.search(r"b24r_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}", created.text)
        assert plaintext is not None
        [key] = harness.svc.apikeys.all()
        revoked = await c.post(f"/admin/api-keys/{key.id}/revoke", data={"csrf": csrf})
        assert revoked.status_code == 303
        audit_page = await c.get("/admin/audit")
        connection_page = await c.get("/admin/audit", params={"kind": "connection."})

    entries = harness.svc.audit.recent(action="connection.")
    assert [(e.action, e.actor, e.target) for e in reversed(entries)] == [
        ("connection.add", "anna", "erp"),
        ("connection.set", "anna", "erp"),
        ("connection.remove", "anna", "erp"),
        ("connection.remove", "anna", "erp"),
    ]
    add, change, drop, delete = reversed(entries)
    assert add.details == {"kind": "http", "portal": "", "settings": ["auth", "base_url"], "secrets": ["token"]}
    assert change.details == {"portal": member, "settings": ["timeout"], "secrets": ["token"], "cleared": []}
    assert drop.details == {"portal": member, "rows": 1} and delete.details == {"portal": "", "rows": 1}
    assert all(e.address for e in entries)
    created_entry, revoked_entry = reversed(harness.svc.audit.recent(action="api_key."))
    assert (created_entry.action, created_entry.actor, created_entry.target) == ("api_key.create", "anna", "1C")
    assert created_entry.details["key"] == key.shown and created_entry.details["portal"] == harness.portal.domain
    assert created_entry.details["triggers"] == ["order.shipped"]
    assert (revoked_entry.action, revoked_entry.actor, revoked_entry.details["key_id"]) == (
        "api_key.revoke",
        "anna",
        key.id,
    )
    # the page shows them; no secret anywhere in the log or on its pages
    assert "connection.remove" in audit_page.text and "api_key.revoke" in audit_page.text
    assert "connection.add" in connection_page.text and "api_key.create" not in connection_page.text
    everything = dump(harness.svc.audit.recent(limit=1000)) + audit_page.text + connection_page.text
    for secret in (SECRET, OTHER_SECRET, plaintext.group(0)):
        assert secret not in everything


def test_connection_changes_from_the_cli_are_audited_without_secrets(tmp_path: Path) -> None:
    run(
        tmp_path, "connections", "add", "erp", "--kind", "http",
        "--set", "base_url=http://127.0.0.1:9/api/", "--set", "auth=bearer", "--secret", "token",
        stdin=SECRET + "\n",
    )  # fmt: skip
    run(tmp_path, "connections", "set", "erp", "--secret", f"token={OTHER_SECRET}", "--clear", "auth")
    run(tmp_path, "connections", "remove", "erp", "--yes")
    db = Database(f"sqlite:///{tmp_path / 'data' / 'b24robots.db'}")
    try:
        entries = list(reversed(Audit(db).recent(action="connection.")))
    finally:
        db.dispose()
    assert [e.action for e in entries] == ["connection.add", "connection.set", "connection.remove"]
    assert all(e.actor.startswith("cli:") and e.target == "erp" for e in entries)
    assert entries[0].details["secrets"] == ["token"]
    assert entries[1].details == {"portal": "", "settings": [], "secrets": ["token"], "cleared": ["auth"]}
    assert SECRET not in dump(entries) and OTHER_SECRET not in dump(entries)
