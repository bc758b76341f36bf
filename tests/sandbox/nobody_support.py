"""Running a pool driver as `nobody` (through `setpriv`), for the tests of the levels reached
without root. A driver is a script printing one JSON line; ``%(paths)r`` in it becomes the import
path of this checkout and its site-packages."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import b24robots.sandbox as sandbox_pkg


def _nobody(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **(env or {})},
    )


def _interpreter_for_nobody() -> str | None:
    """This Python, or the system's of the same version, if `nobody` can start it twice over
    (the pool execs its own interpreter for the zygote)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", shutil.which(version) or ""):
        if candidate and os.path.exists(candidate):
            probe = "import subprocess, sys; subprocess.run([sys.executable, '-I', '-c', ''], check=True)"
            if _nobody(candidate, "-c", probe).returncode == 0:
                return candidate
    return None


def report_as_nobody(script: str) -> dict[str, Any]:
    """Run `script` (a pool driver printing one JSON line) as `nobody`; skip where that cannot be."""
    interpreter = _interpreter_for_nobody()
    if interpreter is None:
        pytest.skip("no Python interpreter here can be started by nobody")
    paths = [str(Path(sandbox_pkg.__file__).resolve().parents[2]), *site.getsitepackages()]
    probe = f"import sys; sys.path[:0] = {paths!r}; import b24robots.sandbox"
    if _nobody(interpreter, "-c", probe).returncode != 0:
        # e.g. a checkout or virtualenv under a 0700 directory (mktemp -d): nobody cannot import the pool
        pytest.skip("nobody cannot read this checkout or its virtualenv; clone it where others can read it")
    done = _nobody(interpreter, "-c", script.replace("%(paths)r", repr(paths)))
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report
