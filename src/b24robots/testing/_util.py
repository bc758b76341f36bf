"""Small helpers shared by the simulator modules: PHP value semantics and id shapes."""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_ALNUM = string.ascii_letters + string.digits


def php_truthy(value: Any) -> bool:
    """PHP's boolean cast: empty string, ``"0"``, 0, empty containers and null are false."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value not in ("", "0")
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, list | dict | tuple):
        return len(value) > 0
    return True


def php_empty(value: Any) -> bool:
    """PHP ``empty()``."""
    return not php_truthy(value)


def get_bool(value: Any) -> bool:
    """``CBPHelper::getBool``: false for empty, ``'false'``, 0, ``'N'``/``'n'``; true otherwise."""
    if php_empty(value):
        return False
    return not (isinstance(value, str) and value.lower() in ("false", "n"))


def upper_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """``array_change_key_case($data, CASE_UPPER)`` (later duplicates win, as in PHP)."""
    return {str(k).upper(): v for k, v in data.items()}


def php_array(items: Mapping[str, Any]) -> list[Any] | dict[str, Any]:
    """Serialize an ordered PHP array as ``json_encode`` does: a list when keys are exactly 0..n-1."""
    keys = list(items)
    if all(_int_key(k) == i for i, k in enumerate(keys)):
        return [items[k] for k in keys]
    return dict(items)


def _int_key(key: str) -> int | None:
    # PHP turns a decimal-integer string key into an int key.
    if key.isascii() and key.isdigit() and (key == "0" or key[0] != "0"):
        return int(key)
    return None


def new_token() -> str:
    """An OAuth token shaped like Bitrix ones (70 hex characters)."""
    return secrets.token_hex(35)


def new_hex32() -> str:
    return secrets.token_hex(16)


def new_client_id() -> str:
    """A local application id: ``local.<14 hex>.<8 digits>``."""
    return f"local.{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"


def new_client_secret() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(50))


def new_workflow_id() -> str:
    """A workflow instance id like ``681c894d3f0ec8.54818143`` (14 hex, dot, 8 digits)."""
    return f"{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"


def new_activity_name() -> str:
    """An activity name like ``A36717_5720_22885_29158``."""
    r = secrets.randbelow
    return f"A{10000 + r(90000)}_{1000 + r(9000)}_{10000 + r(90000)}_{10000 + r(90000)}"


def new_event_id() -> str:
    """``Random::getString(32, true)``: 32 characters of ``[0-9a-zA-Z]``."""
    return "".join(secrets.choice(_ALNUM) for _ in range(32))


def new_webhook_secret() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(16))


def iso_c(ts: float) -> str:
    """PHP ``date('c')`` in UTC, e.g. ``2025-05-08T12:34:56+00:00``."""
    return datetime.fromtimestamp(int(ts), tz=UTC).isoformat()


def mask(secret: str) -> str:
    """Show only the first 4 characters of a secret."""
    return secret[:4] + "…" if secret else ""
