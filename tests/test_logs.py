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
