"""``event_token`` as ``CBPRestActivity::generateToken`` makes it (§2.3).

``<workflowId>|<activityName>|<eventId>.<hex HMAC-SHA256(value, key="bizproc" + portal secret)>``
"""

from __future__ import annotations

import hashlib
import hmac


def _mac(secret: str, value: str) -> str:
    return hmac.new(("bizproc" + secret).encode(), value.encode(), hashlib.sha256).hexdigest()


def sign_event_token(secret: str, workflow_id: str, activity_name: str, event_id: str) -> str:
    value = f"{workflow_id}|{activity_name}|{event_id}"
    return f"{value}.{_mac(secret, value)}"


def unsign_event_token(secret: str, token: object) -> tuple[str, str, str] | None:
    """The (workflow id, activity name, event id) of a genuine token; None for anything else."""
    if not isinstance(token, str) or "." not in token:
        return None
    value, _, signature = token.rpartition(".")
    if not hmac.compare_digest(_mac(secret, value), signature):
        return None
    parts = value.split("|")
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]
