"""What a new user meets on a fresh machine: the README's plugin example, the lock file, `serve`'s address."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port, launch, process_env, wait_serving

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks(text: str) -> list[str]:
    return [block.replace("\n   ", "\n").strip() for block in re.findall(r"```python\n(.*?)```", text, flags=re.S)]


def _block_starting(marker: str) -> str:
    found = [b for b in _python_blocks(README) if b.splitlines()[0].strip() == marker]
    assert len(found) == 1, f"README must have exactly one python block starting with {marker!r}"
    return found[0] + "\n"


@pytest.mark.slow
def test_readme_plugin_example_passes_in_a_fresh_project_in_strict_mode(tmp_path: Path) -> None:
    robot = next(b for b in _python_blocks(README) if '@router.robot("demo.discount"' in b)
    (tmp_path / "robots.py").write_text(robot + "\n", encoding="utf-8")
    (tmp_path / "conftest.py").write_text(_block_starting("# conftest.py"), encoding="utf-8")
    (tmp_path / "test_robots.py").write_text(_block_starting("# test_robots.py"), encoding="utf-8")
    # A project of its own: no asyncio_mode setting, so pytest-asyncio runs in its default strict mode.
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B24R_", "PYTEST_"))}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT / 'src'}"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=strict", "test_robots.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def _requirement_names(lock: str) -> set[str]:
    return {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (ROOT / "requirements" / lock).read_text().splitlines()
        if re.match(r"^[A-Za-z0-9]", line) and "==" in line
    }


def _declared(group: str) -> set[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group == "runtime" else project["optional-dependencies"][group]
    return {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]).lower() for spec in specs}


def test_the_locks_pin_every_declared_dependency_with_hashes() -> None:
    serve, test = _requirement_names("serve.lock"), _requirement_names("test.lock")
    assert _declared("runtime") <= serve, "run: bash scripts/lock.sh (pyproject.toml changed)"
    assert _declared("runtime") | _declared("test") <= test, "run: bash scripts/lock.sh (pyproject.toml changed)"
    assert {"setuptools", "wheel"} <= serve & test  # the build backend, so `pip install -e .` fetches nothing
    for lock in ("serve.lock", "test.lock"):
        text = (ROOT / "requirements" / lock).read_text()
        pins = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9].*==", line)]
        assert pins and all(line.rstrip().endswith("\\") for line in pins), f"{lock}: every pin carries hashes"
    # serve.lock is test.lock's subset at the same versions
    versions = {}
    for lock in ("serve.lock", "test.lock"):
        for line in (ROOT / "requirements" / lock).read_text().splitlines():
            if re.match(r"^[A-Za-z0-9].*==", line):
                name, version = line.split(" ")[0].split("==")
                versions.setdefault(name, set()).add(version)
    assert all(len(v) == 1 for v in versions.values()), {k: v for k, v in versions.items() if len(v) > 1}


@pytest.mark.slow
def test_serve_follows_its_port_and_says_what_is_missing(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24R_")}
    env.update(B24R_DATA_DIR=str(tmp_path / "data"))
    proc = launch(["serve", "--port", str(port)], env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_serving(proc, port)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code in (200, 503)
        docs = httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5)
        assert docs.status_code == 200
        assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", docs.text)
        assert assets and all(a.startswith("/") for a in assets), assets  # nothing from a CDN
        for asset in assets:
            assert httpx.get(f"http://127.0.0.1:{port}{asset}", timeout=5).status_code == 200
        served = (tmp_path / "data" / "served-url").read_text().strip()
        assert served == f"http://127.0.0.1:{port}"
        link = subprocess.run(
            [sys.executable, "-m", "b24robots", "admin", "create-user", "ann", "--password-stdin"],
            cwd=tmp_path, env=process_env(env), input="a long enough password\n", capture_output=True, text=True,
        )  # fmt: skip
        assert link.returncode == 0, link.stderr
        link = subprocess.run(
            [sys.executable, "-m", "b24robots", "admin", "login-link", "ann"],
            cwd=tmp_path, env=process_env(env), capture_output=True, text=True,
        )  # fmt: skip
        assert link.stdout.strip().startswith(f"http://127.0.0.1:{port}/admin/login/link/"), link.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert f"handler: http://127.0.0.1:{port}/b24/robot" in out.replace("\n", " ")
    assert "127.0.0.1:8000" not in out
    assert "B24R_CLIENT_ID" in out and "installs from Bitrix24 will be refused" in out.replace("\n", " ")
    assert "admin create-user" in out and f"http://127.0.0.1:{port}/admin/" in out
