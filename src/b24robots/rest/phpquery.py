"""PHP `http_build_query` for `batch` commands (`"method?" + query`), written for the client side.

Rules (PHP defaults, RFC 1738): nested keys in bracket notation with the brackets percent-encoded,
list items indexed `[0]`, `[1]`...; spaces as `+`; `True`/`False` as `1`/`0`; `None` and empty
containers are left out (PHP skips them too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from urllib.parse import quote_plus

__all__ = ["http_build_query"]


def _scalar(value: object, path: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"batch parameter {path}: {value!r} cannot be sent to Bitrix24")
        return repr(value)
    if isinstance(value, str):
        return value
    raise TypeError(
        f"batch parameter {path}: values must be str, int, float, bool, None, dicts or lists,"
        f" got {type(value).__name__}"
    )


def _walk(prefix: str, value: object, out: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _walk(f"{prefix}[{key}]", item, out)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        for index, item in enumerate(value):
            _walk(f"{prefix}[{index}]", item, out)
    else:
        # PHP urlencode leaves only letters, digits and "-_." alone; quote_plus also keeps "~".
        text = _scalar(value, prefix)
        out.append(f"{quote_plus(prefix, safe='')}={quote_plus(text, safe='')}".replace("~", "%7E"))


def http_build_query(params: Mapping[str, object]) -> str:
    """Encode `params` exactly as PHP `http_build_query($params)` does."""
    if not isinstance(params, Mapping):
        raise TypeError(f"batch parameters must be a mapping, got {type(params).__name__}")
    out: list[str] = []
    for key, value in params.items():
        _walk(str(key), value, out)
    return "&".join(out)
