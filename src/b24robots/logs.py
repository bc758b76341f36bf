"""Structured (JSON lines) logging with secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

# auth[access_token]=..., "refresh_token": "...", access_token=..., Bearer ...
_SECRET_RE = re.compile(
    r"(?P<key>(?:access_token|refresh_token|application_token|client_secret|auth|AUTH_ID|REFRESH_ID|"
    r"APPLICATION_TOKEN|password)[\]\"']?\s*[=:]\s*[\"']?)(?P<val>[A-Za-z0-9._\-]{6,})",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"(Bearer\s+)([A-Za-z0-9._\-]{6,})")


def redact_text(text: str) -> str:
    """Mask token-like values that follow a secret's name (keeps 4 characters)."""
    text = _SECRET_RE.sub(lambda m: f"{m.group('key')}{m.group('val')[:4]}…", text)
    return _BEARER_RE.sub(lambda m: f"{m.group(1)}{m.group(2)[:4]}…", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        for key in ("portal", "robot", "invocation", "event"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """`LEVEL logger: message` lines, redacted like the JSON ones (message and traceback)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def setup_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Log to stderr as JSON lines (or plain lines); every line, whoever logs it, is redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
