"""`b24robots connections ...` as a user runs it: real subprocesses, a real SQLite file, the fake 1C."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from b24robots.store.db import Database
from b24robots.testing import FakeOneCServer
from tests.connections.support import SECRET
from tests.test_ui_cli import run


def test_add_list_test_set_remove(tmp_path: Path, b24_onec: FakeOneCServer) -> None:
    fake = b24_onec.fake
    fake.add("Catalog_Контрагенты", Description="ООО Ромашка")
    fake.password = SECRET
    added = run(
        tmp_path, "connections", "add", "buh", "--kind", "1c",
        "--set", f"base_url={b24_onec.base_url}", "--set", "username=odata", "--secret", "password",
        stdin=SECRET + "\n",
    )  # fmt: skip
    assert "added 1c connection buh" in added.stdout
    listed = run(tmp_path, "connections", "list")
    assert "buh" in listed.stdout and "password=********" in listed.stdout and SECRET not in listed.stdout
    tested = run(tmp_path, "connections", "test", "buh")
    assert "buh: ok, $metadata answered with 1 entity set(s)" in tested.stdout
    # the secret is encrypted in the database file
    db = Database(f"sqlite:///{tmp_path / 'data' / 'b24robots.db'}")
    with db.read() as s:
        raw = json.dumps([list(map(str, r)) for r in s.execute(text("select * from connections"))])
    db.dispose()
    assert SECRET not in raw
    run(tmp_path, "connections", "set", "buh", "--secret", "password=wrong-one")
    failed = run(tmp_path, "connections", "test", "buh", check=False)
    assert failed.returncode == 2 and "answered 401" in failed.stderr and "wrong-one" not in failed.stderr
    assert "Traceback" not in failed.stderr
    removed = run(tmp_path, "connections", "remove", "buh", "--yes")
    assert "removed connection buh" in removed.stdout


def test_bad_input_names_the_fix(tmp_path: Path) -> None:
    bad_kind = run(tmp_path, "connections", "add", "x", "--kind", "ftp", check=False)
    assert bad_kind.returncode == 2 and "use one of: http, 1c, sql" in bad_kind.stderr
    bad_pair = run(tmp_path, "connections", "add", "x", "--kind", "http", "--set", "base_url", check=False)
    assert bad_pair.returncode == 2 and "must be key=value" in bad_pair.stderr
    no_portal = run(tmp_path, "connections", "set", "x", "--portal", "nowhere.bitrix24.ru", check=False)
    assert no_portal.returncode == 2 and "no installation for 'nowhere.bitrix24.ru'" in no_portal.stderr
    unreachable = run(tmp_path, "connections", "add", "erp", "--kind", "http", "--set", "base_url=http://127.0.0.1:9/")
    assert unreachable.returncode == 0
    down = run(tmp_path, "connections", "test", "erp", check=False)
    assert down.returncode == 2 and "cannot be reached" in down.stderr
    missing = run(tmp_path, "connections", "test", "ghost", check=False)
    assert missing.returncode == 2 and "no connection named 'ghost'" in missing.stderr


def test_remove_is_refused_while_a_stored_robot_declares_it(tmp_path: Path) -> None:
    run(tmp_path, "connections", "add", "dwh", "--kind", "sql", "--set", f"url=sqlite:///{tmp_path / 'dwh.db'}")
    doc = tmp_path / "robot.json"
    doc.write_text(
        json.dumps(
            {
                "code": "t.uses_dwh",
                "name": "Uses dwh",
                "connections": ["dwh"],
                "source": "def run(inputs, ctx):\n    return {}\n",
            }
        )
    )
    run(tmp_path, "robots", "add", str(doc))
    refused = run(tmp_path, "connections", "remove", "dwh", "--yes", check=False)
    assert refused.returncode == 2 and "used by robot(s) t.uses_dwh" in refused.stderr
    assert "t.uses_dwh" in run(tmp_path, "connections", "list").stdout
