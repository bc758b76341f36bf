"""Parameter types: the Bitrix schema name, parsing of incoming values and dumping of outputs.

One `ParamType` serves three purposes: it is the `Type` written into `PROPERTIES` on registration,
it parses what the portal POSTs in `properties[...]`, and it dumps return values for `RETURN_VALUES`.
`parse(dump(v)) == v` holds for every valid value; the round-trip tests prove it per type.

Wire forms accepted (protocol §2.4; UNCONFIRMED forms are all accepted):

=========  ===========================================  =================================
type       accepted on input                            dumped as
=========  ===========================================  =================================
string     any string                                   the string
text       any string                                   the string
int        ``"42"``, ``"-7"``, ``"42.0"``                ``"42"``
double     ``"1.5"``, ``"1,5"``, ``"3"``                 ``repr``-exact decimal string
bool       ``Y/N``, ``1/0``, ``true/false``, ``yes/no``  ``"Y"`` / ``"N"``
date       ``dd.mm.yyyy``, ``mm/dd/yyyy``, ISO 8601      ``dd.mm.yyyy``
datetime   the date forms plus a time, ISO 8601,         ``dd.mm.yyyy HH:MM:SS``
           ``"<value> [<offset>]"``
select     an option key                                the key
user       ``user_<id>`` or ``<id>`` -> int; other       ``user_<id>``; a code as is
           codes (``group_d5``) -> str
file       numeric id -> int; anything else -> str       the id or the string
=========  ===========================================  =================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from b24robots.errors import DeclarationError


class ParamType(StrEnum):
    """The documented basic Bitrix24 property types."""

    STRING = "string"
    TEXT = "text"
    INT = "int"
    DOUBLE = "double"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    SELECT = "select"
    USER = "user"
    FILE = "file"


class ValueError_(ValueError):
    """A wire value does not fit the type (internal; surfaced as `InputError`)."""


_TRUE = {"y", "yes", "1", "true", "on"}
_FALSE = {"n", "no", "0", "false", "off"}
_INT_RE = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_USER_RE = re.compile(r"^(?:user_)?(\d+)$")
# "27.05.2024", "27.05.2024 14:30", "27.05.2024 14:30:00"
_DMY_RE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
# "05/27/2024", "05/27/2024 02:30:00 pm"
_MDY_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*([aApP][mM]))?)?$")
# serialized Bitrix value "27.05.2024 14:30:00 [10800]" (offset in seconds)
_OFFSET_SUFFIX_RE = re.compile(r"^(.*\S)\s*\[([+-]?\d+)\]$")

DATE_FORMAT = "%d.%m.%Y"
DATETIME_FORMAT = "%d.%m.%Y %H:%M:%S"


def _parse_datetime(text: str) -> datetime:
    """Parse the date and datetime spellings a portal may send; raise ValueError_ otherwise."""
    raw = text.strip()
    tz: timezone | None = None
    suffix = _OFFSET_SUFFIX_RE.match(raw)
    if suffix:
        raw = suffix.group(1)
        tz = timezone(timedelta(seconds=int(suffix.group(2))))
    m = _DMY_RE.match(raw)
    if m:
        d, mo, y, hh, mm, ss = m.groups()
        return _build(int(y), int(mo), int(d), hh, mm, ss, None, tz, text)
    m = _MDY_RE.match(raw)
    if m:
        mo, d, y, hh, mm, ss, ampm = m.groups()
        return _build(int(y), int(mo), int(d), hh, mm, ss, ampm, tz, text)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError_(f"{text!r} is not a date; send dd.mm.yyyy[ HH:MM:SS] or ISO 8601") from None
    return value if tz is None or value.tzinfo else value.replace(tzinfo=tz)


def _build(
    y: int,
    mo: int,
    d: int,
    hh: str | None,
    mm: str | None,
    ss: str | None,
    ampm: str | None,
    tz: timezone | None,
    text: str,
) -> datetime:
    hour = int(hh or 0)
    if ampm:
        if not 1 <= hour <= 12:
            raise ValueError_(f"{text!r}: hour {hour} does not fit am/pm")
        hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
    try:
        return datetime(y, mo, d, hour, int(mm or 0), int(ss or 0), tzinfo=tz)
    except ValueError as exc:
        raise ValueError_(f"{text!r} is not a valid date: {exc}") from None


def _has_time(text: str) -> bool:
    return ":" in text


def parse_scalar(ptype: ParamType, text: str, options: Mapping[str, str] | None = None) -> Any:
    """Parse one non-empty wire string into the Python value of `ptype`."""
    if ptype in (ParamType.STRING, ParamType.TEXT):
        return text
    stripped = text.strip()
    if ptype is ParamType.INT:
        if not _INT_RE.match(stripped):
            raise ValueError_(f"{text!r} is not a whole number")
        return int(stripped.split(".")[0])
    if ptype is ParamType.DOUBLE:
        try:
            value = float(stripped.replace(",", ".").replace(" ", ""))
        except ValueError:
            raise ValueError_(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError_(f"{text!r} is not a finite number")
        return value
    if ptype is ParamType.BOOL:
        low = stripped.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError_(f"{text!r} is not a yes/no value; send Y or N")
    if ptype is ParamType.DATE:
        return _parse_datetime(stripped).date()
    if ptype is ParamType.DATETIME:
        return _parse_datetime(stripped)
    if ptype is ParamType.SELECT:
        if options is not None and text not in options:
            known = ", ".join(sorted(options)) or "none"
            raise ValueError_(f"{text!r} is not one of the options ({known})")
        return text
    if ptype is ParamType.USER:
        m = _USER_RE.match(stripped)
        return int(m.group(1)) if m else stripped
    if ptype is ParamType.FILE:
        return int(stripped) if stripped.isdigit() else stripped
    raise ValueError_(f"unknown type {ptype!r}")  # pragma: no cover - enum is closed


def dump_scalar(ptype: ParamType, value: Any, options: Mapping[str, str] | None = None) -> str:
    """Dump one Python value into the string the portal expects; raise ValueError_ if it does not fit."""
    if value is None:
        return ""
    if ptype in (ParamType.STRING, ParamType.TEXT):
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return str(value)
        raise ValueError_(f"expected text, got {type(value).__name__}")
    if ptype is ParamType.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and _INT_RE.match(value.strip()):
                return str(int(value.strip().split(".")[0]))
            raise ValueError_(f"expected a whole number, got {value!r}")
        return str(value)
    if ptype is ParamType.DOUBLE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError_(f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError_(f"expected a finite number, got {value!r}")
        return repr(float(value))
    if ptype is ParamType.BOOL:
        if isinstance(value, bool):
            return "Y" if value else "N"
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return "Y" if value.strip().lower() in _TRUE else "N"
        raise ValueError_(f"expected True or False, got {value!r}")
    if ptype is ParamType.DATE:
        if isinstance(value, datetime):
            return value.strftime(DATE_FORMAT)
        if isinstance(value, date):
            return value.strftime(DATE_FORMAT)
        if isinstance(value, str):
            return parse_scalar(ptype, value).strftime(DATE_FORMAT)  # type: ignore[no-any-return]
        raise ValueError_(f"expected a date, got {value!r}")
    if ptype is ParamType.DATETIME:
        if isinstance(value, str):
            value = parse_scalar(ptype, value)
        if isinstance(value, datetime):
            text = value.strftime(DATETIME_FORMAT)
            offset = value.utcoffset()
            if offset is not None:
                text += f" [{int(offset.total_seconds())}]"
            return text
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day).strftime(DATETIME_FORMAT)
        raise ValueError_(f"expected a datetime, got {value!r}")
    if ptype is ParamType.SELECT:
        key = str(value)
        if options is not None and key not in options:
            known = ", ".join(sorted(options)) or "none"
            raise ValueError_(f"{key!r} is not one of the options ({known})")
        return key
    if ptype is ParamType.USER:
        if isinstance(value, bool):
            raise ValueError_(f"expected a user id, got {value!r}")
        if isinstance(value, int):
            return f"user_{value}"
        if isinstance(value, str) and value:
            m = _USER_RE.match(value)
            return f"user_{m.group(1)}" if m else value
        raise ValueError_(f"expected a user id, got {value!r}")
    if ptype is ParamType.FILE:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError_(f"expected a file id, got {value!r}")
        return str(value)
    raise ValueError_(f"unknown type {ptype!r}")  # pragma: no cover


def coerce_type(value: str | ParamType) -> ParamType:
    """Return the ParamType named by `value`, or raise DeclarationError listing the known types."""
    if isinstance(value, ParamType):
        return value
    try:
        return ParamType(str(value).strip().lower())
    except ValueError:
        known = ", ".join(t.value for t in ParamType)
        raise DeclarationError(f"unknown parameter type {value!r}; use one of: {known}") from None
