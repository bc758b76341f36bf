"""Messages at the terminal: user text is never eaten as Rich markup, sync names the setting to use,
a busy port is one line, `jobs show` prints times with their zone, and `journal` is readable at 80
columns, when piped, and as JSON lines. Through the real CLI (typer's runner, or a subprocess on a
pseudo-terminal where the terminal itself matters)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from b24robots import Router
from b24robots.cli import app as cli
from b24robots.policy import RetryRules
from b24robots.testing import PortalSimulator, SimulatorServer
from b24robots.testing.app_fixtures import RobotHarness
from tests.processes import ROOT, process_env

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")
ERROR = "[bold]the ERP said no[/bold] for order [42] " + "and a long tail of detail " * 6

router = Router()


@router.robot("msg.fails_with_a_rather_long_code", name="Fails")
def fails() -> None:
    raise RuntimeError(ERROR)


@router.robot("msg.ok", name="Ok")
def ok() -> None: ...


def env_for(h: RobotHarness, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "B24R_DATA_DIR": str(tmp_path),
        "B24R_SECRET_KEY": "test-secret-key",
        "B24R_ALLOW_HTTP_PORTALS": "true",
        "B24R_PUBLIC_URL": "http://robots.example.test",
        "B24R_CLIENT_ID": h.app.client_id,
        "B24R_CLIENT_SECRET": h.app.client_secret,
        "B24R_APP": "tests.test_cli_messages:router",
        **extra,
    }


def on_a_terminal(args: list[str], env: dict[str, str], columns: int = 80) -> str:
    """Run the CLI on a pseudo-terminal `columns` wide; the text it showed, without escape codes."""
    master, slave = pty.openpty()
    full = process_env({**os.environ, **env, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "b24robots", *args], stdin=slave, stdout=slave, stderr=slave, env=full, cwd=ROOT
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r\n", "\n")


def test_an_invalid_yaml_error_is_shown_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24R_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("B24R_SECRET_KEY", "k")
    monkeypatch.setenv("COLUMNS", "300")
    bad = tmp_path / "bad.yaml"
    bad.write_text("code: demo.x\nname: [bold]Total\n  source: [/bold]\n", encoding="utf-8")
    with pytest.raises(yaml.YAMLError) as err:
        yaml.safe_load(bad.read_text(encoding="utf-8"))
    result = CliRunner().invoke(cli, ["robots", "import", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    shown = " ".join(result.output.split())
    assert " ".join(str(err.value).split()) in shown  # every bracket of the parser's message is there


async def test_sync_names_the_setting_and_does_not_say_nothing_to_change_when_it_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = PortalSimulator()
    with SimulatorServer(sim):
        async with RobotHarness(router, data_dir=tmp_path, sim=sim, workers=False, sandbox=False) as h:
            await h.install()
            for k, v in env_for(h, tmp_path, B24R_ALLOW_HTTP_PORTALS="false", COLUMNS="300").items():
                monkeypatch.setenv(k, v)
            result = await asyncio.to_thread(CliRunner().invoke, cli, ["sync"])
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "failed" in out and "B24R_ALLOW_HTTP_PORTALS=true" in out
    assert "nothing to change" not in out and "Traceback" not in out


def test_portal_on_a_busy_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "b24robots", "portal", "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env={**os.environ, "COLUMNS": "300"},
        )
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0] and "--port" in lines[0]


async def test_jobs_show_and_journal_are_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        # the failed run's retry is an hour away: until_idle does not wait for it, the entry stays failed
        h.svc.runner.rules = RetryRules(max_attempts=2, base_delay=3600, max_delay=3600)
        await h.run_robot("msg.fails_with_a_rather_long_code")
        await h.run_robot("msg.ok")
        entries = {i.robot_code: i for i in h.svc.journal.recent()}
        failed = entries["msg.fails_with_a_rather_long_code"]
        env = env_for(h, tmp_path)
    for k, v in {**env, "COLUMNS": "300"}.items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    shown = runner.invoke(cli, ["jobs", "show", str(failed.id)])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert ISO.fullmatch(doc["received_at"]) and ISO.fullmatch(doc["started_at"])
    assert all(doc[k] is None or ISO.fullmatch(doc[k]) for k in doc if k.endswith("_at"))
    piped = runner.invoke(cli, ["journal"])  # the runner's output is not a terminal
    assert piped.exit_code == 0, piped.output
    header, *lines = piped.output.splitlines()
    assert header.split("\t") == ["id", "received", "robot", "document", "state", "attempts", "run_ms", "error"]
    row = next(line.split("\t") for line in lines if line.startswith(f"{failed.id}\t"))
    assert ISO.fullmatch(row[1]) and row[2] == failed.robot_code and row[4] == failed.state
    assert ERROR.strip() in row[7]  # the whole first line, markup characters and all
    as_json = [json.loads(line) for line in runner.invoke(cli, ["journal", "--json"]).output.splitlines()]
    assert {e["robot_code"] for e in as_json} == set(entries)
    screen = await asyncio.to_thread(on_a_terminal, ["journal"], env)
    lines = [line for line in screen.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"{failed.id} "))
    assert failed.robot_code in lines[at] and "failed" in lines[at]
    assert "[bold]the ERP said no" in lines[at + 1] and lines[at + 1].rstrip().endswith("…")
    assert "msg.ok" in screen and "times in" in screen
    wide = await asyncio.to_thread(on_a_terminal, ["journal"], env, 160)
    row_line = next(line for line in wide.splitlines() if line.lstrip().startswith(f"{failed.id} "))
    assert "[bold]the ERP said no" in row_line and len(row_line.rstrip()) <= 160
