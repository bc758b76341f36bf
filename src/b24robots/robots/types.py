"""Parameter types: the Bitrix schema name, parsing of incoming values and dumping of outputs.

One `ParamType` serves three purposes: it is the `Type` written into `PROPERTIES` on registration,
it parses what the portal POSTs in `properties[...]`, and it dumps return values for `RETURN_VALUES`.
`parse(dump(v)) == v` holds for every valid value; the round-trip tests prove it per type.

Wire forms accepted (protocol §9.3: the portal does not convert inputs to the declared type;
`bizproc/classes/general/restactivity.php::__construct`, `classes/general/activity.php::__get`):

=========  ==============================================  =================================
type       accepted on input                               dumped as
=========  ==============================================  =================================
string     any string                                      the string
text       any string                                      the string
int        ``"42"``, ``"1 500"``, ``"1500.50"`` (truncated,  ``"42"``
           with a warning in the run log), ``"1500,5"``
double     ``"1.5"``, ``"1,5"``, ``"1 234,56"``,             ``repr``-exact decimal string
           ``"1,234.56"``; ``"1,500"`` is refused
bool       ``Y/N``, ``1/0``, ``true/false``, ``yes/no``     ``"Y"`` / ``"N"``
date       the portal culture's format (`dates.py`),       ``YYYY-MM-DD``
           ``dd.mm.yyyy``, ISO 8601
datetime   the date forms plus a time, ISO 8601, a unix    ISO 8601 (offset when known);
           timestamp, ``"<value> [N]"``                    a number as a unix timestamp
select     an option key                                   the key
user       ``user_<id>``, ``<id>``, ``Name [<id>]`` -> int;  ``user_<id>``; a code as is
           other codes (``group_d5``) -> str
file       the b_file id -> int; anything else -> str      the id or the string
=========  ==============================================  =================================

A single-valued parameter also accepts a one-element list (an expression may evaluate to an array).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from b24robots.errors import DeclarationError
from b24robots.fields import INT64_MAX, INT64_MIN, as_int
from b24robots.robots.dates import (
    UNKNOWN,
    Culture,
    DateValueError,
    dump_date,
    dump_datetime,
    parse_date,
    parse_datetime,
)


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
_INT_RE = re.compile(r"^[+-]?\d+(?:\.0*)?$", re.ASCII)
_USER_RE = re.compile(r"^(?:user_)?(\d+)$", re.ASCII)
# the designer's printable form of a user, "Anna Admin [17]" (CBPHelper::UsersStringToArray)
_USER_PRINTABLE_RE = re.compile(r"^.*\[(\d+)\]$", re.ASCII)
# group separators a workflow may leave in a number: space, no-break space, narrow no-break, thin space
_GROUP_SPACES = str.maketrans("", "", " \u00a0\u202f\u2009'")
_PLAIN_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$", re.ASCII)


def parse_number(text: str) -> Decimal:
    """A number as a workflow may write it: `1500.50`, `1 500,50`, `1,234.56`, `1.234,56`.

    Spaces are group separators; a lone comma is the decimal comma; with both `,` and `.` the last
    one is the decimal mark and the other must separate groups of three. `1,500` (a lone comma before
    exactly three digits) reads as 1.5 on some portals and 1500 on others, so it is refused.
    """
    s = text.strip().translate(_GROUP_SPACES)
    if not s:
        raise ValueError_(f"{text!r} is not a number")
    commas, dots = s.count(","), s.count(".")
    if commas and dots:
        decimal_mark = "," if s.rfind(",") > s.rfind(".") else "."
        group_mark = "." if decimal_mark == "," else ","
        whole, _, fraction = s.rpartition(decimal_mark)
        if group_mark in fraction or not _grouped(whole, group_mark):
            raise ValueError_(f"{text!r} is not a number; send it like 1234.56")
        s = f"{whole.replace(group_mark, '')}.{fraction}"
    elif commas == 1:
        whole, _, fraction = s.partition(",")
        if len(fraction) == 3 and _digits(whole.lstrip("+-")) and whole.lstrip("+-") != "0":
            raise ValueError_(
                f"{text!r} is unclear: 1,500 means 1.5 on some portals and 1500 on others; send it like 1500 or 1.5"
            )
        s = f"{whole}.{fraction}"
    elif commas > 1 or dots > 1:
        mark = "," if commas else "."
        if not _grouped(s, mark):
            raise ValueError_(f"{text!r} is not a number; send it like 1234.56")
        s = s.replace(mark, "")
    if not _PLAIN_NUMBER_RE.match(s):
        raise ValueError_(f"{text!r} is not a number")
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise ValueError_(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError_(f"{text!r} is not a finite number")
    return value


def _cut(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 40 else f"{shown[:37]}..."


def _grouped(whole: str, mark: str) -> bool:
    digits = whole.lstrip("+-")
    groups = digits.split(mark)
    return 1 <= len(groups[0]) <= 3 and _digits(groups[0]) and all(len(g) == 3 and _digits(g) for g in groups[1:])


def _digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def parse_scalar(
    ptype: ParamType,
    text: str,
    options: Mapping[str, str] | None = None,
    *,
    culture: Culture = UNKNOWN,
    warnings: list[str] | None = None,
) -> Any:
    """Parse one non-empty wire string into the Python value of `ptype`.

    Dates are read in the portal's `culture`; leniencies that change a value (an int arriving as
    `1500.50`) add a sentence to `warnings` when given.
    """
    if ptype in (ParamType.STRING, ParamType.TEXT):
        return text
    stripped = text.strip()
    if ptype is ParamType.INT:
        if _INT_RE.match(stripped):
            exact = as_int(stripped.split(".")[0], signed=True, minimum=INT64_MIN)
            if exact is None:
                raise ValueError_(f"{_cut(text)} is out of range for a whole number (64 bits)")
            return exact
        try:
            number = parse_number(stripped)
        except ValueError_ as exc:
            raise ValueError_(f"{exc}; expected a whole number") from None
        # 1e999999999 is finite; int() of it would build a billion-digit number (and abs() overflows)
        whole = int(number) if number.adjusted() < 19 else INT64_MAX + 1  # truncates toward zero, as PHP's (int)
        if not INT64_MIN <= whole <= INT64_MAX:
            raise ValueError_(f"{_cut(text)} is out of range for a whole number (64 bits)")
        if number != whole and warnings is not None:
            warnings.append(f"{text!r} is not a whole number; used {whole}")
        return whole
    if ptype is ParamType.DOUBLE:
        value = float(parse_number(stripped))
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
        try:
            return parse_date(stripped, culture)
        except DateValueError as exc:
            raise ValueError_(str(exc)) from None
    if ptype is ParamType.DATETIME:
        try:
            return parse_datetime(stripped, culture)
        except DateValueError as exc:
            raise ValueError_(str(exc)) from None
    if ptype is ParamType.SELECT:
        if options is not None and text not in options:
            known = ", ".join(sorted(options)) or "none"
            raise ValueError_(f"{text!r} is not one of the options ({known})")
        return text
    if ptype is ParamType.USER:
        m = _USER_RE.match(stripped) or _USER_PRINTABLE_RE.match(stripped)
        user = as_int(m.group(1)) if m else None
        return user if user is not None else stripped
    if ptype is ParamType.FILE:
        # bizproc/lib/basetype/file.php: a file property holds the b_file id (a number)
        file_id = as_int(stripped)  # "²".isdigit() is true, int("²") raises
        return file_id if file_id is not None else stripped
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
                exact = as_int(value.strip().split(".")[0], signed=True, minimum=INT64_MIN)
                if exact is not None:
                    return str(exact)
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
        if isinstance(value, str):
            value = parse_scalar(ptype, value)
        if isinstance(value, date):
            return dump_date(value)
        raise ValueError_(f"expected a date, got {value!r}")
    if ptype is ParamType.DATETIME:
        if isinstance(value, str):
            value = parse_scalar(ptype, value)
        if isinstance(value, date | int | float) and not isinstance(value, bool):
            return dump_datetime(value)
        raise ValueError_(f"expected a datetime or a unix timestamp, got {value!r}")
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
