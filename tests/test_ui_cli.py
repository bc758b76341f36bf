"""The CLI commands of the admin feature, run as real subprocesses; help texts and the guide; the migration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from alembic.script import ScriptDirectory
from sqlalchemy import inspect as sa_inspect

from b24robots.cli import app as cli_app
from b24robots.store.audit import Audit
from b24robots.store.db import Database
from b24robots.store.migrate import alembic_config, downgrade, upgrade

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"


def run(tmp_path: Path, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24R_")}
    env.update(B24R_DATA_DIR=str(tmp_path / "data"), B24R_PUBLIC_URL="http://127.0.0.1:8000", COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-c", "from b24robots.cli import main; main()", *args],
        input=stdin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every command below `group` as ("robots test-run", command); groups included."""
    out = []
    for name, cmd in sorted(group.commands.items()):
        path = f"{prefix} {name}".strip()
        out.append((path, cmd))
        if hasattr(cmd, "commands"):
            out.extend(commands(cmd, path))
    return out


def test_every_command_has_help_and_is_in_the_guide() -> None:
    root = typer.main.get_command(cli_app)
    guide = GUIDE.read_text(encoding="utf-8")
    found = commands(root)
    assert len(found) > 20
    for path, cmd in found:
        assert (cmd.help or "").strip(), f"`b24robots {path}` has no help text"
        assert f"b24robots {path}" in guide, f"docs/guide.md does not mention `b24robots {path}`"


def test_admin_user_commands(tmp_path: Path) -> None:
    created = run(tmp_path, "admin", "create-user", "anna", "--password-stdin", stdin="correct horse battery\n")
    assert "created admin user anna" in created.stdout
    short = run(tmp_path, "admin", "create-user", "boris", "--password-stdin", stdin="short\n", check=False)
    assert short.returncode == 2 and "too short" in short.stderr and "Traceback" not in short.stderr
    listed = run(tmp_path, "admin", "list-users")
    assert "anna" in listed.stdout and "boris" not in listed.stdout
    link = run(tmp_path, "admin", "login-link", "anna")
    assert re.search(r"http://127\.0\.0\.1:8000/admin/login/link/[\w-]{40,}", link.stdout)
    run(tmp_path, "admin", "set-password", "anna", "--password-stdin", stdin="another long password\n")
    signed_out = run(tmp_path, "admin", "sign-out", "anna")
    assert "ended 0 session(s) of anna" in signed_out.stdout
    run(tmp_path, "admin", "delete-user", "anna", "--yes")
    assert "anna" not in run(tmp_path, "admin", "list-users").stdout
    missing = run(tmp_path, "admin", "delete-user", "nobody", "--yes", check=False)
    assert missing.returncode == 2 and "no admin user 'nobody'" in missing.stderr
    db = Database(f"sqlite:///{tmp_path / 'data' / 'b24robots.db'}")
    actions = [(e.action, e.target) for e in reversed(Audit(db).recent())]
    assert actions == [
        ("user.create", "anna"), ("user.login_link", "anna"), ("user.password", "anna"),
        ("session.sign_out_everywhere", "anna"), ("user.delete", "anna"),
    ]  # fmt: skip
    assert all(e.actor.startswith("cli") for e in Audit(db).recent())
    db.dispose()


def test_robots_add_edit_diff_test_run(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "deal_total.yaml").read_text(encoding="utf-8"))
    first = tmp_path / "v1.yaml"
    first.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert "version 1 is active" in run(tmp_path, "robots", "add", str(first)).stdout
    again = run(tmp_path, "robots", "add", str(first), check=False)
    assert again.returncode == 2 and "exists already" in again.stderr
    doc["source"] = doc["source"].replace("ROUND_HALF_UP)", "ROUND_HALF_UP)  # rounded half up")
    second = tmp_path / "v2.yaml"
    second.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert "version 2 is active" in run(tmp_path, "robots", "edit", "demo.deal_total", str(second)).stdout
    wrong = run(tmp_path, "robots", "edit", "other.code", str(second), check=False)
    assert wrong.returncode == 2 and "not 'other.code'" in wrong.stderr
    diff = run(tmp_path, "robots", "diff", "demo.deal_total", "1", "2")
    assert "+    vat = (amount * rate).quantize" in diff.stdout and "# rounded half up" in diff.stdout
    test = run(tmp_path, "robots", "test-run", "demo.deal_total", "--input", "amount=100", "-i", "vat_rate=10")
    assert re.search(r"total\s+│?\s*110\.0", test.stdout) and "VAT 10% on 100" in test.stdout
    bad = run(tmp_path, "robots", "test-run", "demo.deal_total", "--input", "amount=x", check=False)
    assert bad.returncode == 2 and "bad input" in bad.stderr


def test_robots_adopt(tmp_path: Path) -> None:
    adopted = run(tmp_path, "robots", "adopt", "ui.greet", "--app", "tests.test_ui_robots:router")
    assert "stored version 1 now runs" in adopted.stdout
    test = run(tmp_path, "robots", "test-run", "ui.greet", "-i", "name=Ann", "--app", "tests.test_ui_robots:router")
    assert "Hello, Ann!" in test.stdout
    refused = run(tmp_path, "robots", "adopt", "ui.calls_rest", "--app", "tests.test_ui_robots:router", check=False)
    assert refused.returncode == 2 and "cannot be converted automatically" in refused.stderr
    out = tmp_path / "template.py"
    run(tmp_path, "robots", "adopt", "ui.calls_rest", "--app", "tests.test_ui_robots:router", "-o", str(out))
    assert "def run(inputs, ctx):" in out.read_text(encoding="utf-8")


@pytest.mark.slow
def test_demo_sets_everything_up(tmp_path: Path) -> None:
    proc = run(tmp_path, "demo", "--dir", str(tmp_path / "demo"), "--exit-after-setup")
    out = proc.stdout
    assert "robots registered: ok" in out
    assert "ran demo.deal_total on DEAL_1 -> answered: total=1200.0, vat=200.0" in out
    assert "ran demo.discount on DEAL_1 -> answered: discount=250.0, total=2250.0" in out
    # the stored robot looked the counterparty up in the fake 1C and wrote it to the deal
    assert "ran demo.inn_lookup on DEAL_1 -> answered: name=ООО Ромашка" in out
    assert "DEAL_1 comment now: 1C: ООО Ромашка (INN 7701234567)" in out
    assert "fired demo.payment on DEAL_1 over POST /api/v1/ -> delivered; deal stage WON; demo.discount answered" in out
    assert re.search(r"One-time login: +http://127\.0\.0\.1:\d+/admin/login/link/[\w-]{40,}", out)
    assert re.search(r"Portal simulator: +http://127\.0\.0\.1:\d+/sim/", out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = run(tmp_path, "demo", "--dir", str(other), "--exit-after-setup", check=False)
    assert refused.returncode == 2 and "holds other files" in refused.stderr
    assert (other / "notes.txt").exists()


def test_admin_migration_goes_up_and_down(db: Database) -> None:
    tables = set(sa_inspect(db.engine).get_table_names())
    assert {"admin_users", "admin_sessions", "login_throttle", "login_tokens", "audit_log"} <= tables
    downgrade(db.engine, "0001")
    assert not {"admin_users", "login_tokens"} & set(sa_inspect(db.engine).get_table_names())
    upgrade(db.engine)
    assert "admin_users" in set(sa_inspect(db.engine).get_table_names())
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1
