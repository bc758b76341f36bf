"""Property values on the wire: externalize for the handler body, internalize returned values.

Property declarations here are the normalised ones (upper-case attribute keys: TYPE, MULTIPLE,
OPTIONS, DEFAULT ...), as ``bizproc.robot.add`` stores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

from b24robots.errors import SimulatorError

from ._util import get_bool, php_truthy

Culture = Literal["dmy", "us"]

_DATE_FORMATS: dict[str, tuple[str, str]] = {
    # (date, datetime) as the portal site format renders them
    "dmy": ("%d.%m.%Y", "%d.%m.%Y %H:%M:%S"),
    "us": ("%m/%d/%Y", "%m/%d/%Y %I:%M:%S %p"),
}


def prop_type(prop: Mapping[str, Any]) -> str:
    """The property TYPE, lower-cased; ``string`` when missing (as the designer assumes)."""
    value = prop.get("TYPE")
    return value.lower() if isinstance(value, str) and value else "string"


def is_multiple(prop: Mapping[str, Any]) -> bool:
    return get_bool(prop.get("MULTIPLE"))


def _external_scalar(kind: str, value: Any, culture: Culture, code: str) -> str:
    date_fmt, datetime_fmt = _DATE_FORMATS[culture]
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
            text = value.strftime(datetime_fmt)
            return text.lower() if culture == "us" else text
        if isinstance(value, date):
            return value.strftime(date_fmt)
        return str(value)
    if kind == "date":
        if isinstance(value, datetime | date):
            return value.strftime(date_fmt)
        return str(value)
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, float) and value.is_integer() and kind == "int":
        return str(int(value))
    return str(value)


def externalize(code: str, prop: Mapping[str, Any], value: Any, culture: Culture = "dmy") -> str | list[str]:
    """The wire form of ``value`` for property ``prop`` (§2.4); ``None`` becomes ``''``."""
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
        return [_external_scalar(kind, item, culture, code) for item in items]
    if isinstance(value, list | tuple):
        # An expression may evaluate to an array even for a single-valued property (IU notes).
        return [_external_scalar(kind, item, culture, code) for item in value]
    return _external_scalar(kind, value, culture, code)


def _parse_date(text: str, with_time: bool) -> date | datetime | str:
    formats = [
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%m/%d/%Y %I:%M:%S %p",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    date_formats = ["%d.%m.%Y", "%m/%d/%Y", "%Y-%m-%d"]
    for fmt in formats:
        try:
            parsed = datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        return parsed if with_time else parsed.date()
    for fmt in date_formats:
        try:
            parsed = datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        return parsed if with_time else parsed.date()
    try:
        iso = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    return iso if with_time else iso.date()


def _internal_scalar(kind: str, value: Any) -> Any:
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
        return _parse_date(value, kind == "datetime")
    return value


def internalize(prop: Mapping[str, Any], value: Any) -> Any:
    """A returned value as the workflow stores it: truthy values are converted by type, falsy kept raw."""
    if not php_truthy(value):
        return value
    kind = prop_type(prop)
    if isinstance(value, list):
        return [_internal_scalar(kind, item) for item in value]
    if isinstance(value, dict):
        return [_internal_scalar(kind, item) for item in value.values()]
    converted = _internal_scalar(kind, value)
    return [converted] if is_multiple(prop) else converted
