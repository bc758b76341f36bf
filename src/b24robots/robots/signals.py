"""Control signals a robot handler raises to steer its invocation.

They are not errors: `Retry` asks the queue to run the invocation again later, `RobotFailure`
ends it with a message for the workflow log and, optionally, output values.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any


class Retry(Exception):
    """Run this invocation again after `delay` seconds (if the workflow's timeout allows)."""

    def __init__(self, delay: float | timedelta = 30.0, reason: str = "") -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError("Retry delay must be >= 0 seconds")
        super().__init__(reason or f"retry in {seconds:g} s")
        self.delay = seconds
        self.reason = reason


class RobotFailure(Exception):
    """End the invocation as failed: `message` goes to the workflow log, `outputs` to RETURN_VALUES."""

    def __init__(self, message: str, outputs: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.outputs = dict(outputs or {})
