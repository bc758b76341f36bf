"""The test support that runs `b24robots serve` / `worker` (tests/processes.py): the code it runs, and
what it does when a process does not come up or does not stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port, launch, process_env, stop, wait_running, wait_serving


def test_processes_started_by_tests_import_the_checkout_under_test() -> None:
    probe = "import b24robots, tests.proc_robots; print(b24robots.__file__)"
    # from another directory, so that the working directory cannot be what finds them
    out = subprocess.run(
        [sys.executable, "-c", probe], env=process_env({}), cwd="/", capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip()).resolve() == (ROOT / "src" / "b24robots" / "__init__.py").resolve()


def test_a_server_that_cannot_start_fails_the_wait_with_what_it_said(tmp_path: Path) -> None:
    env = {"B24R_DATA_DIR": str(tmp_path), "B24R_SECRET_KEY": "k"}
    port = free_port()
    proc = launch(["serve", "--port", str(port), "tests.no_such_module:router"], env)
    with pytest.raises(pytest.fail.Exception, match=r"serve did not answer(.|\n)*no_such_module"):
        wait_serving(proc, port)
    assert proc.returncode is not None


def test_a_worker_that_ends_before_it_runs_fails_the_wait_with_what_it_said(tmp_path: Path) -> None:
    env = {"B24R_DATA_DIR": str(tmp_path), "B24R_SECRET_KEY": "k"}
    proc = launch(["worker", "tests.no_such_module:router"], env, stdout=subprocess.PIPE)
    with pytest.raises(pytest.fail.Exception, match=r"the worker did not start(.|\n)*no_such_module"):
        wait_running(proc)
    assert proc.returncode is not None


def test_stop_kills_what_ignores_sigterm() -> None:
    ignores = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", ignores], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # the handler is in place
    stop(proc, grace=0.5)
    assert proc.returncode == -9
    stop(proc)  # an ended process: nothing to do


def test_a_process_that_never_says_it_runs_fails_the_wait_in_time_and_is_stopped() -> None:
    silent = "import time; print('worker starting', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", silent], stdout=subprocess.PIPE)
    with pytest.raises(pytest.fail.Exception, match="the worker did not start"):
        wait_running(proc, timeout=1.0)
    assert proc.returncode is not None  # stopped, not left behind
