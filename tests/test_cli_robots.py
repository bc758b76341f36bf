"""The command line: robots import/export/versions/activate, and errors that name the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from b24robots.cli import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "deal_total.yaml"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("B24R_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("B24R_SECRET_KEY", "k")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def run(cli: CliRunner, *args: str) -> tuple[int, str]:
    result = cli.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_import_versions_activate_export(cli: CliRunner, tmp_path: Path) -> None:
    code, out = run(cli, "robots", "import", str(EXAMPLE), "--author", "anna", "--comment", "first")
    assert code == 0 and "created robot demo.deal_total: version 1 is active" in out
    edited = tmp_path / "v2.yaml"
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    doc["source"] = doc["source"].replace("ROUND_HALF_UP", "ROUND_DOWN")
    edited.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code, out = run(cli, "robots", "import", str(edited), "--author", "boris", "--comment", "round down")
    assert code == 0 and "updated robot demo.deal_total: version 2 is active" in out
    code, out = run(cli, "robots", "versions", "demo.deal_total")
    assert code == 0 and "anna" in out and "boris" in out and "round down" in out
    code, out = run(cli, "robots", "activate", "demo.deal_total", "1")
    assert code == 0 and "version 1 is active" in out
    result = cli.invoke(app, ["robots", "export", "demo.deal_total", "-f", "json"])
    exported = json.loads(result.output)
    assert exported["code"] == "demo.deal_total" and "ROUND_HALF_UP" in exported["source"]
    assert exported["properties"]["vat_rate"]["options"] == {"0": "0%", "10": "10%", "20": "20%"}
    code, out = run(cli, "robots", "list", "--app", "examples.demo_robots:router")
    assert code == 0 and "demo.deal_total" in out and "demo.discount" in out and "module" in out


def test_export_round_trips_through_import(cli: CliRunner, tmp_path: Path) -> None:
    run(cli, "robots", "import", str(EXAMPLE))
    out = tmp_path / "out.yaml"
    assert run(cli, "robots", "export", "demo.deal_total", "-o", str(out))[0] == 0
    code, text = run(cli, "robots", "import", str(out))
    assert code == 0 and "version 1 is active" in text  # identical content: no new version


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["robots", "versions", "nope"], "no stored robot with code 'nope'; see `b24robots robots list`"),
        (["robots", "activate", "nope", "1"], "no stored robot"),
        (["robots", "export", "nope"], "no robot or trigger with code 'nope'"),
        (["robots", "export", "x", "-f", "xml"], "use json or yaml"),
        (["journal", "--status", "lost"], "use one of: queued"),
        (["jobs", "retry", "42"], "no invocation with id 42"),
    ],
)
def test_errors_name_the_fix_without_tracebacks(cli: CliRunner, args: list[str], message: str) -> None:
    code, out = run(cli, *args)
    assert code == 2 and message in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("code: Bad Code\nname: x\nsource: 'def run(i, c): return {}'\n", "robot code 'Bad Code' is invalid"),
        ("code: a\nname: x\n", "has no `source`"),
        ("code: a\nname: x\nsource: s\nproperties: {p: {name: P, type: money}}\n", "unknown parameter type 'money'"),
        ("code: a\nname: [unclosed\n", "is not valid YAML"),
        ("code: a\nname: x\nsource: |\n  def run(inputs, ctx):\n      return {\n", "line 2"),
        ("- just\n- a list\n", "must hold robot or trigger documents"),
    ],
)
def test_import_errors(cli: CliRunner, tmp_path: Path, doc: str, message: str) -> None:
    path = tmp_path / "robot.yaml"
    path.write_text(doc, encoding="utf-8")
    code, out = run(cli, "robots", "import", str(path))
    assert code == 2 and message in out


def test_bad_settings_name_the_variable(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "b24robots", "robots", "list"],
        env={"PATH": "/usr/bin:/bin", "B24R_PUBLIC_URL": "not a url", "B24R_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "B24R_PUBLIC_URL" in proc.stderr and "Traceback" not in proc.stderr


def test_show_and_journal_commands(cli: CliRunner, tmp_path: Path) -> None:
    from b24robots.store.db import Database
    from b24robots.store.journal import Journal
    from tests.test_store_journal import install, new

    run(cli, "robots", "import", str(EXAMPLE))
    code, out = run(cli, "robots", "show", "demo.deal_total")
    assert code == 0 and "vat_rate" in out and "ROUND_HALF_UP" in out

    db = Database(f"sqlite:///{tmp_path / 'data' / 'b24robots.db'}")
    iid = install(db, domain="acme.bitrix24.com", access_token="secret-access")
    journal = Journal(db)
    inv_id, _ = journal.enqueue(
        new(
            iid,
            "e1",
            robot_code="demo.deal_total",
            origin="stored",
            robot_version_id=1,
            document_id=["crm", "CCrmDocumentDeal", "DEAL_7"],
            properties={"amount": "5"},
            inputs={"amount": 5.0},
        )
    )
    (claimed,) = journal.claim("w", 1, lease=30)
    journal.kill(claimed.id, "w", error="boom", log=[], log_message="m", outputs={})
    code, out = run(cli, "journal", "--portal", "acme.bitrix24.com", "--status", "dead")
    assert code == 0 and "DEAL_7" in out and "boom" in out
    code, out = run(cli, "journal", "--portal", "nowhere.example.com")
    assert code == 2 and "no installation for 'nowhere.example.com'" in out
    code, out = run(cli, "jobs", "show", str(inv_id))
    assert code == 0 and '"amount": 5.0' in out and "secret-access" not in out
    code, out = run(cli, "jobs", "replay", str(inv_id))
    assert code == 0 and f"invocation {inv_id} replayed as" in out
    code, out = run(cli, "jobs", "retry", str(inv_id))
    assert code == 0 and "queued again" in out
    code, out = run(cli, "installations", "list")
    assert code == 0 and "acme.bitrix24.com" in out and "secret-access" not in out


def test_settings_mask_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from b24robots.config import load_settings

    monkeypatch.setenv("B24R_CLIENT_SECRET", "very-secret")
    monkeypatch.setenv("B24R_DATABASE_URL", "postgresql+psycopg://u:pw123@db/x")
    settings = load_settings()
    masked = settings.masked()
    assert masked["client_secret"] == "**********" and "very-secret" not in repr(settings)
    assert masked["database_url"] == "postgresql+psycopg://u:****@db/x"


def test_robots_and_triggers_travel_together_in_one_file(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24R_APP", "tests.test_register_triggers:router")  # declares trigger order.shipped
    robot = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    trigger = {"kind": "trigger", "code": "payment.received", "name": {"en": "Payment received", "ru": "Оплата"}}
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(yaml.safe_dump_all([robot, trigger], allow_unicode=True), encoding="utf-8")
    code, out = run(cli, "robots", "import", str(bundle), "--author", "anna")
    assert code == 0, out
    assert "created robot demo.deal_total: version 1" in out and "created trigger payment.received: version 1" in out

    exported = tmp_path / "out.json"
    code, out = run(cli, "robots", "export", "demo.deal_total", "payment.received", "-f", "json", "-o", str(exported))
    assert code == 0, out
    docs = json.loads(exported.read_text(encoding="utf-8"))
    assert [d["kind"] for d in docs] == ["robot", "trigger"] and docs[1] == trigger
    assert "run(" in docs[0]["source"]
    code, out = run(cli, "robots", "import", str(exported))  # the export reads back: nothing new
    assert code == 0 and "unchanged trigger payment.received: version 1" in out, out
    result = cli.invoke(app, ["robots", "export", "--all"])
    assert result.exit_code == 0, result.output
    every = yaml.safe_load(result.output)
    assert {d["code"] for d in every} == {"demo.deal_total", "payment.received", "order.shipped"}

    docs[1]["name"] = {"en": "Paid"}
    docs.append({"kind": "trigger", "code": "Order.Shipped", "name": "Mine"})  # the module declares it
    exported.write_text(json.dumps(docs), encoding="utf-8")
    code, out = run(cli, "robots", "import", str(exported))
    assert code == 2 and "declared in the robots module (router.trigger) already" in out, out
    code, out = run(cli, "triggers", "list")
    assert "Payment received" in out  # nothing of the refused file was saved
    docs.pop()
    exported.write_text(json.dumps(docs), encoding="utf-8")
    code, out = run(cli, "robots", "import", str(exported))
    assert code == 0 and "updated trigger payment.received: version 2" in out, out
