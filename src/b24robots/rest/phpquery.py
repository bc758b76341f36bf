"""PHP `http_build_query` for `batch` commands (`"method?" + query`).

The encoding itself is the form codec's (`encode_form`: brackets percent-encoded, lists indexed,
spaces as `+`, booleans as `1`/`0`); the one PHP rule added here is that `None` values are left out
(`http_build_query` skips nulls, where a form body carries an empty value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from b24robots.errors import FormEncodeError
from b24robots.inbound.formcodec import encode_form

__all__ = ["http_build_query"]


def _without_none(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int:  # most leaves: no ABC isinstance checks (slow) for them
        return value
    if kind is dict:
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"batch parameters: {value!r} cannot be sent to Bitrix24")
    if isinstance(value, Mapping):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value if v is not None]
    return value


def http_build_query(params: Mapping[str, object]) -> str:
    """Encode `params` exactly as PHP `http_build_query($params)` does; TypeError if it cannot be sent."""
    if not isinstance(params, Mapping):
        raise TypeError(f"batch parameters must be a mapping, got {type(params).__name__}")
    try:
        return encode_form(_without_none(params)).decode("ascii")
    except FormEncodeError as exc:
        raise TypeError(f"batch parameters: {exc.reason}") from None
