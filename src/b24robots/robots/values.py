"""How a run's values and messages are kept: inputs as JSON for the journal, messages cut for the portal.

Pure functions shared by the intake, the runner, the worker and the sender (they lived in the runner,
which the intake then had to import).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

# the longest LOG_MESSAGE we send with bizproc.event.send / bizproc.activity.log; the portal writes
# it whole to the workflow's tracking log (bizproc restservice.php::sendEvent / writeActivityLog), so
# the bound is ours: a robot's error text stays readable there and the batch stays small
MAX_LOG_MESSAGE = 2000


def jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed inputs as JSON-safe values for the journal (dates as ISO text, lists element by element)."""

    def conv(v: Any) -> Any:
        if isinstance(v, datetime | date):
            return v.isoformat()
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    return {k: conv(v) for k, v in values.items()}


def short(text: str, limit: int = MAX_LOG_MESSAGE) -> str:
    """`text` cut to at most `limit` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
