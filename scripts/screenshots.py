"""Regenerate the screenshots in docs/screenshots from the browser tests.

    python scripts/screenshots.py        (in the project virtualenv: .venv/bin/python scripts/screenshots.py)

The test suite writes its screenshots to the ignored .test-artifacts/ folder; this command runs the same
browser tests with B24R_SCREENSHOTS_DIR pointing at docs/screenshots, so the docs change only on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    env = {**os.environ, "B24R_SCREENSHOTS_DIR": str(ROOT / "docs" / "screenshots")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "browser", "tests/ui", *sys.argv[1:]]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
