"""Reading untrusted field values: numbers, Y/N flags and URLs, without ever raising on bad input.

Every boundary (portal requests, portal and OAuth-server answers, admin forms, the CLI) reads numbers
and URLs through these functions rather than `str.isdigit()` + `int()` or a bare `urlsplit()`:

- `str.isdigit()` is true for "²" and "٣", and `int("²")` raises ValueError while `int("٣")` is 3;
  `int()` also takes "1_000", " 7 " and "+7", and a 5000-digit string raises. Portals send plain ASCII
  decimals (PHP's `(string)` of an int), so only those are numbers here.
- `urlsplit("https://[/rest/")` raises ValueError, and `.port` raises for "host:99999" or "host:x".

`as_int`/`as_flag`/`host_of` answer None for what they cannot read; `int_field` raises `InputError`
naming the field, for callers that answer 400 with the reason.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, urlsplit

from b24robots.errors import InputError

INT64_MAX = (1 << 63) - 1  # the widest integer column of the store (BIGINT on PostgreSQL, INTEGER on SQLite)
INT64_MIN = -(1 << 63)
INT32_MAX = (1 << 31) - 1  # an Integer column on PostgreSQL (int4)
_MAX_DIGITS = 19  # len(str(INT64_MAX)); longer strings are out of range before int() is asked
_DIGITS = frozenset("0123456789")


def as_int(
    value: Any,
    *,
    signed: bool = False,
    minimum: int | None = None,
    maximum: int | None = INT64_MAX,
) -> int | None:
    """`value` as an int when it is one (not a bool) or a string of ASCII digits, else None.

    With `signed`, a leading "-" or "+" is allowed. Leading zeros are allowed ("007" is 7), whitespace
    is not. Values below `minimum` or above `maximum` (default: the int64 range) are None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value
        if signed and text[:1] in ("-", "+"):
            text = text[1:]
        text = text.lstrip("0") or ("0" if text else "")
        if not text or len(text) > _MAX_DIGITS or not _DIGITS.issuperset(text):
            return None
        number = -int(text) if value[:1] == "-" and signed else int(text)
    else:
        return None
    if maximum is not None and number > maximum:
        return None
    if minimum is not None and number < minimum:
        return None
    if not signed and number < 0:
        return None
    return number


def int_field(
    value: Any,
    key: str,
    *,
    signed: bool = False,
    minimum: int | None = None,
    maximum: int | None = INT64_MAX,
) -> int:
    """`as_int`, or InputError(key, reason) saying what a valid value looks like."""
    number = as_int(value, signed=signed, minimum=minimum, maximum=maximum)
    if number is None:
        low = minimum if minimum is not None else (None if signed else 0)
        bounds = f" from {low}" if low is not None else ""
        bounds += f" to {maximum}" if maximum is not None else ""
        raise InputError(key, f"{_shown(value)} is not a whole number{bounds} (ASCII digits only)")
    return number


def as_flag(value: Any) -> bool | None:
    """True for "Y", False for "N" (any case, bools as themselves), None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        upper = value.upper()
        if upper == "Y":
            return True
        if upper == "N":
            return False
    return None


def split_url(url: Any) -> SplitResult | None:
    """`urlsplit(url)` when `url` is a string that splits and whose port (if any) is a valid one, else None."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for "host:x" or "host:99999"
    except ValueError:
        return None
    return parts


def host_of(url: Any) -> str | None:
    """The lower-case host name of `url` (no port, no brackets), or None for a bad or host-less URL."""
    parts = split_url(url)
    host = parts.hostname if parts is not None else None
    return host or None


def netloc_of(url: Any) -> str | None:
    """The lower-case host[:port] of `url` without user info, or None for a bad or host-less URL."""
    parts = split_url(url)
    if parts is None or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}" if parts.port is not None else host


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
