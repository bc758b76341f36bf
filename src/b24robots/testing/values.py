"""Property values on the wire: externalize for the handler body, internalize returned values.

Property declarations here are the normalised ones (upper-case attribute keys: TYPE, MULTIPLE,
OPTIONS, DEFAULT ...), as ``bizproc.robot.add`` stores them.

Dates follow the portal's culture exactly (module sources, `yuliai/bitrix-modules`):

- outgoing (the handler body): ``bizproc/lib/basetype/date.php::externalizeValue`` casts the value to
  the site format of the culture (``main/lang/<lang>/install/index.php``): ru/de ``DD.MM.YYYY HH:MI:SS``,
  en ``MM/DD/YYYY H:MI:SS T`` (``05/27/2024 02:30:00 pm``), fr/es/br/la/it ``DD/MM/YYYY HH:MI:SS``;
  strings pass unchanged.
- returned (``RETURN_VALUES``): ``value/date.php`` / ``value/datetime.php``: a numeric string is a unix
  timestamp; else the culture format, else ``DATE_ISO8601`` (``Y-m-d\\TH:i:sO``), each read with
  ``main/lib/type/date.php::parse`` (PHP ``date_parse_from_format``; one error such as trailing or
  missing data is ignored, so ``05/27/2024`` on a ``DD/MM`` portal rolls over into 2026);
  anything else stays the raw string.

The simulated server runs in UTC: a timestamp becomes an aware UTC datetime (or its UTC date), a
value without an offset a naive datetime (server wall clock).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from b24robots.errors import SimulatorError

from ._util import get_bool, php_truthy


@dataclass(frozen=True)
class SiteFormat:
    """A culture's site formats in PHP ``date()`` notation (as ``Type\\Date::convertFormatToPhp`` makes them)."""

    language: str
    date: str
    datetime: str


_DOT = ("d.m.Y", "d.m.Y H:i:s")
_SLASH_DMY = ("d/m/Y", "d/m/Y H:i:s")
_US = ("m/d/Y", "m/d/Y h:i:s a")
SITE_FORMATS: dict[str, tuple[str, str]] = {
    "ru": _DOT,
    "de": _DOT,
    "en": _US,
    "fr": _SLASH_DMY,
    "es": _SLASH_DMY,
    "br": _SLASH_DMY,
    "la": _SLASH_DMY,
    "it": _SLASH_DMY,
}
_ALIASES = {"dmy": "ru", "us": "en"}
ISO8601 = "Y-m-d\\TH:i:sO"  # PHP DATE_ISO8601


def check_culture(value: str) -> str:
    """A culture name for a simulated portal: a language code of `SITE_FORMATS` (or '' = its language)."""
    code = _ALIASES.get(value, value).lower() if value else ""
    if code and code not in SITE_FORMATS:
        raise SimulatorError(f"unknown culture {value!r}; use one of {sorted(SITE_FORMATS)}")
    return code


def site_format(culture: str) -> SiteFormat:
    """The site format of a language; a language without its own culture falls back to en."""
    code = check_culture(culture) or "en"
    return SiteFormat(code, *SITE_FORMATS[code])


# Kept for callers that name the type of a culture argument.
Culture = str


def prop_type(prop: Mapping[str, Any]) -> str:
    """The property TYPE, lower-cased; ``string`` when missing (as the designer assumes)."""
    value = prop.get("TYPE")
    return value.lower() if isinstance(value, str) and value else "string"


def is_multiple(prop: Mapping[str, Any]) -> bool:
    return get_bool(prop.get("MULTIPLE"))


_PY = {"d": "%d", "m": "%m", "Y": "%Y", "H": "%H", "h": "%I", "i": "%M", "s": "%S", "a": "%p"}


def php_format(value: datetime | date, fmt: str) -> str:
    """PHP ``date(fmt)`` for the few letters site formats use (``a`` is lower-case am/pm)."""
    out = []
    for ch in fmt:
        if ch in _PY:
            text = value.strftime(_PY[ch])
            out.append(text.lower() if ch == "a" else text)
        else:
            out.append(ch)
    return "".join(out)


def _external_scalar(kind: str, value: Any, fmt: SiteFormat, code: str) -> str:
    if value is None:
        return ""
    if kind == "bool":
        if isinstance(value, bool):
            return "Y" if value else "N"
        if isinstance(value, str) and value.upper() in ("Y", "N"):
            return value.upper()
        return "Y" if get_bool(value) else "N"
    if kind == "user":
        if isinstance(value, bool):
            raise SimulatorError(f"property {code!r}: a user value must be a user id or a code like 'user_1'")
        if isinstance(value, int):
            return f"user_{value}"
        return str(value)
    if kind == "datetime":
        if isinstance(value, datetime):
            if value.tzinfo is not None:  # the portal shows a moment in its server time (UTC here)
                value = value.astimezone(UTC).replace(tzinfo=None)
            return php_format(value, fmt.datetime)
        if isinstance(value, date):
            return php_format(value, fmt.date)
        return str(value)
    if kind == "date":
        if isinstance(value, datetime | date):
            return php_format(value, fmt.date)
        return str(value)
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, float) and value.is_integer() and kind == "int":
        return str(int(value))
    return str(value)


def externalize(code: str, prop: Mapping[str, Any], value: Any, culture: str = "") -> str | list[str]:
    """The wire form of ``value`` for property ``prop`` (§2.4) on a portal of ``culture``; ``None`` becomes ``''``."""
    fmt = site_format(culture)
    kind = prop_type(prop)
    if kind == "select":
        options = prop.get("OPTIONS")
        if isinstance(options, Mapping) and options and value not in (None, ""):
            keys = [str(k) for k in options]
            for item in value if isinstance(value, list | tuple) else [value]:
                if str(item) not in keys:
                    raise SimulatorError(f"property {code!r}: {item!r} is not one of the options {keys}")
    if is_multiple(prop):
        if value is None:
            return ""
        items = list(value) if isinstance(value, list | tuple | set) else [value]
        return [_external_scalar(kind, item, fmt, code) for item in items]
    if isinstance(value, list | tuple):
        # An expression may evaluate to an array even for a single-valued property (IU notes).
        return [_external_scalar(kind, item, fmt, code) for item in value]
    return _external_scalar(kind, value, fmt, code)


# --- reading returned dates the way main/lib/type/date.php::parse does -------------------------------

_TOKEN_RE = {
    "d": re.compile(r"\d{1,2}"),
    "m": re.compile(r"\d{1,2}"),
    "Y": re.compile(r"\d{1,4}"),
    "H": re.compile(r"\d{1,2}"),
    "h": re.compile(r"\d{1,2}"),
    "i": re.compile(r"\d{2}"),
    "s": re.compile(r"\d{2}"),
    "a": re.compile(r"[aApP][mM]"),
    "O": re.compile(r"[+-]\d{2}:?\d{2}|Z"),
}
_SERIALIZED_RE = re.compile(r"(.+)\s\[([0-9\-]+)\]")  # Value\Date::SERIALIZED_PATTERN
_PHP_NUMERIC_RE = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")


def php_parse(fmt: str, text: str) -> dict[str, Any] | None:
    """``date_parse_from_format`` as ``Type\\Date::parse`` uses it: ``None`` on a hard mismatch; one
    trailing-data or missing-data error is tolerated (fields not reached stay ``None``)."""
    fields: dict[str, Any] = {}
    pos = 0
    tokens = list(fmt)
    k = 0
    while k < len(tokens):
        ch = tokens[k]
        if pos >= len(text):
            return fields  # "Not enough data available to satisfy format": a single error, ignored
        if ch == "\\" and k + 1 < len(tokens):
            k += 1
            if text[pos] != tokens[k]:
                return None
            pos += 1
        elif ch in _TOKEN_RE:
            m = _TOKEN_RE[ch].match(text, pos)
            if not m:
                return None
            fields[ch] = m.group(0)
            pos = m.end()
        else:
            if text[pos] != ch:
                return None
            pos += 1
        k += 1
    return fields  # anything left is "Trailing data": a single error, ignored


def _build_moment(fields: dict[str, Any]) -> datetime | None:
    if "Y" not in fields:
        return None
    year, month, day = int(fields["Y"]), int(fields.get("m") or 1), int(fields.get("d") or 1)
    hour = int(fields.get("H") or fields.get("h") or 0)
    if "a" in fields and "h" in fields:
        pm = fields["a"].lower() == "pm"
        hour = (hour % 12) + (12 if pm else 0)
    # \DateTime::setDate/setTime roll over (month 27 is March two years on)
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    try:
        base = datetime(year, month, 1)
    except ValueError:
        return None
    moment = base + timedelta(
        days=day - 1, hours=hour, minutes=int(fields.get("i") or 0), seconds=int(fields.get("s") or 0)
    )
    zone = fields.get("O")
    if zone:
        if zone == "Z":
            return moment.replace(tzinfo=UTC)
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        return moment.replace(tzinfo=timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))))
    return moment


def internal_date(text: str, with_time: bool, culture: str = "") -> date | datetime | str:
    """A returned date string as ``Value\\Date(Time)`` reads it, or the raw string when it is not a date."""
    if _PHP_NUMERIC_RE.match(text):
        moment = datetime.fromtimestamp(int(float(text)), tz=UTC)
        return moment if with_time else moment.date()
    offset = 0
    value = text
    serialized = _SERIALIZED_RE.search(text)
    if serialized:
        value, offset = serialized.group(1), int(serialized.group(2))
    fmt = site_format(culture)
    for pattern in (fmt.datetime if with_time else fmt.date, ISO8601):
        fields = php_parse(pattern, value)
        parsed = _build_moment(fields) if fields is not None else None
        if parsed is not None:
            if not with_time:
                return parsed.date()  # Type\Date keeps the day and drops time and zone
            return parsed - timedelta(seconds=offset)
    return text


def _internal_scalar(kind: str, value: Any, culture: str) -> Any:
    if not isinstance(value, str):
        return value
    if kind == "bool":
        return get_bool(value)
    if kind == "int":
        try:
            return int(value.strip())
        except ValueError:
            return value
    if kind == "double":
        try:
            return float(value.strip().replace(",", "."))
        except ValueError:
            return value
    if kind in ("date", "datetime"):
        return internal_date(value, kind == "datetime", culture)
    return value


def internalize(prop: Mapping[str, Any], value: Any, culture: str = "") -> Any:
    """A returned value as the workflow stores it: truthy values are converted by type, falsy kept raw."""
    if not php_truthy(value):
        return value
    kind = prop_type(prop)
    if isinstance(value, list):
        return [_internal_scalar(kind, item, culture) for item in value]
    if isinstance(value, dict):
        return [_internal_scalar(kind, item, culture) for item in value.values()]
    converted = _internal_scalar(kind, value, culture)
    return [converted] if is_multiple(prop) else converted
