"""Structured logs never carry tokens or secrets in full."""

from __future__ import annotations

import json
import logging

from b24robots.logs import JsonFormatter, redact_text

TOKEN = "5d971c6800782a4e000011e7000000010000005599262cf2"


def test_redaction_of_every_spelling() -> None:
    for text in (
        f"auth[access_token]={TOKEN}",
        f'{{"refresh_token": "{TOKEN}"}}',
        f"access_token={TOKEN}&x=1",
        f"Authorization: Bearer {TOKEN}",
        f"APPLICATION_TOKEN={TOKEN}",
        f"client_secret: {TOKEN}",
    ):
        out = redact_text(text)
        assert TOKEN not in out and "5d97…" in out, out


def test_json_lines_are_redacted_including_tracebacks() -> None:
    record = logging.LogRecord("b24robots", logging.ERROR, __file__, 1, "refresh failed for auth=%s", (TOKEN,), None)
    try:
        raise RuntimeError(f"refresh_token={TOKEN}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "b24robots"
    assert TOKEN not in line


def test_plain_lines_are_redacted_too() -> None:
    """`setup_logging(json_lines=False)`: the plain format masks secrets like the JSON one."""
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "from b24robots.logs import setup_logging\n"
        "setup_logging('INFO', json_lines=False)\n"
        "logging.getLogger('httpx').warning('GET https://o/oauth/token/?refresh_token=%s', 'r3fr3shs3cr3t99')\n"
        "try:\n"
        "    raise ValueError('access_token=acc3sst0k3n42')\n"
        "except ValueError:\n"
        "    logging.getLogger('x').exception('failed')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "WARNING httpx: GET https://o/oauth/token/?refresh_token=r3fr…" in done.stderr
    assert "r3fr3shs3cr3t99" not in done.stderr and "acc3sst0k3n42" not in done.stderr
    assert "ValueError: access_token=acc3…" in done.stderr


def test_the_httpx_url_filter_is_installed_by_the_client_not_by_the_import() -> None:
    import subprocess
    import sys

    code = (
        "import logging\n"
        "import b24robots.rest\n"
        "before = list(logging.getLogger('httpx').filters)\n"
        "from b24robots.rest import MemoryTokenStore, RestClient\n"
        "RestClient(MemoryTokenStore()); RestClient(MemoryTokenStore())\n"
        "after = logging.getLogger('httpx').filters\n"
        "print(len(before), len(after))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["0", "1"]
