"""Dates and times the way portals write and read them.

Where the facts come from (module sources, `yuliai/bitrix-modules`):

- A portal sends a date property in its **culture's site format** (`bizproc/lib/basetype/date.php`,
  `externalizeValue`: `(string) $value->toSystemObject()`), and the culture formats are
  `DD.MM.YYYY` / `DD.MM.YYYY HH:MI:SS` for ru and de, `MM/DD/YYYY` / `MM/DD/YYYY H:MI:SS T`
  (`05/27/2024 02:30:00 pm`) for en, `DD/MM/YYYY` / `DD/MM/YYYY HH:MI:SS` for fr, es, br, la, it
  (`main/lang/<lang>/install/index.php`, `MAIN_DEFAULT_SITE_FORMAT_DATE[TIME]`).
- A serialized value carries `" [N]"` where N is the user's offset minus the server's offset in
  seconds (`bizproc/lib/basetype/date.php::extractOffset`, `main/classes/general/time.php::calculateOffset`);
  the text before it is the user's wall-clock time (`bizproc/lib/basetype/value/date.php::__construct`:
  `timestamp = parse(text) - N`). It is not a UTC offset.
- A returned value is read by `Value\\Date(Time)::__construct`: a numeric string is a unix timestamp;
  otherwise the culture format, then `DATE_ISO8601` (`Y-m-d\\TH:i:sO`); anything else stays a raw
  string in the workflow (`value/date.php`, `value/datetime.php`, `main/lib/type/date.php::parse`).
  So `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[+HH:MM]` and a unix timestamp are dates on every culture,
  while `DD.MM.YYYY` is not a date on an en or fr portal.

What robot code gets: a `date`; a naive `datetime` in the portal server's wall-clock time (the
`[N]` suffix is removed by subtracting N), or an aware one when the value carried a real UTC offset
(ISO 8601) or was a unix timestamp. What we send: `date` as `YYYY-MM-DD`; `datetime` as ISO 8601
(with the offset when the value has one; a naive value is read by the portal in its server time,
the same meaning it has on input); an `int`/`float` returned for a datetime is sent as a unix timestamp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from b24robots.fields import as_int


class DateValueError(ValueError):
    """A text is not a date, or its meaning is unclear (the message says what to do)."""


@dataclass(frozen=True)
class Culture:
    """How a portal's site format writes dates: day-month order and separator."""

    name: str  # the language code it was picked for, '' when unknown
    order: str  # "dmy" | "mdy" | "" (unknown)
    separator: str  # "." | "/" | ""

    @property
    def known(self) -> bool:
        return bool(self.order)

    def describe(self) -> str:
        if not self.known:
            return "unknown culture"
        parts = {"dmy": ("DD", "MM"), "mdy": ("MM", "DD")}[self.order]
        return f"{self.name}: {parts[0]}{self.separator}{parts[1]}{self.separator}YYYY"


_DOT_DMY = ("dmy", ".")
_SLASH_DMY = ("dmy", "/")
_SLASH_MDY = ("mdy", "/")
# main/lang/<lang>/install/index.php, MAIN_DEFAULT_SITE_FORMAT_DATE
LANGUAGE_FORMATS: dict[str, tuple[str, str]] = {
    "ru": _DOT_DMY,
    "de": _DOT_DMY,
    "en": _SLASH_MDY,
    "fr": _SLASH_DMY,
    "es": _SLASH_DMY,
    "br": _SLASH_DMY,
    "la": _SLASH_DMY,
    "it": _SLASH_DMY,
}
UNKNOWN = Culture("", "", "")


def culture_for(language: str) -> Culture:
    """The culture of a portal language code (`LANGUAGE_ID`); `UNKNOWN` for '' or a language we do not know."""
    code = (language or "").strip().lower()
    found = LANGUAGE_FORMATS.get(code)
    return Culture(code, *found) if found else UNKNOWN


def check_culture(value: str) -> str:
    """Validate a culture override: '' (follow the portal's language) or a known language code."""
    code = (value or "").strip().lower()
    if code in ("", "auto"):
        return ""
    if code not in LANGUAGE_FORMATS:
        known = ", ".join(sorted(LANGUAGE_FORMATS))
        raise DateValueError(f"unknown culture {value!r}; use one of {known}, or 'auto' to follow the portal language")
    return code


_MAX_OFFSET = 7 * 86400  # a user's offset from the server is hours; a week is far beyond any zone
_OFFSET_SUFFIX_RE = re.compile(r"^(.*\S)\s+\[([+-]?\d+)\]$", re.ASCII)
_NUMERIC_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?$", re.ASCII)
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}", re.ASCII)
_LOCAL_RE = re.compile(
    r"^(\d{1,2})([./])(\d{1,2})\2(\d{4})"
    r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*([aApP][mM]))?)?$"
)


def parse_datetime(text: str, culture: Culture = UNKNOWN) -> datetime:
    """Parse a datetime as a portal of `culture` sends it (see the module docstring)."""
    raw = text.strip()
    offset = 0
    suffix = _OFFSET_SUFFIX_RE.match(raw)
    if suffix:
        shift = as_int(suffix.group(2), signed=True, minimum=-_MAX_OFFSET, maximum=_MAX_OFFSET)
        if shift is None:
            raise DateValueError(f"{text!r}: the time zone offset [{suffix.group(2)[:12]}] is not a number of seconds")
        raw, offset = suffix.group(1), shift
    value = _parse(raw, text, culture, with_time=True)
    # "<user wall clock> [N]" with N = user offset - server offset: the server's wall clock is text - N
    return value - timedelta(seconds=offset) if offset else value


def parse_date(text: str, culture: Culture = UNKNOWN) -> date:
    """Parse a date; a time part is dropped, an `[N]` suffix does not move the day (`Value\\Date`)."""
    raw = text.strip()
    suffix = _OFFSET_SUFFIX_RE.match(raw)
    if suffix:
        raw = suffix.group(1)
    if _NUMERIC_RE.match(raw):
        raise DateValueError(
            f"{text!r} is a number; a date parameter expects a date such as 2024-05-27 "
            "(the day of a unix timestamp depends on the time zone)"
        )
    return _parse(raw, text, culture, with_time=False).date()


def _parse(raw: str, text: str, culture: Culture, *, with_time: bool) -> datetime:
    if with_time and _NUMERIC_RE.match(raw):
        try:
            return datetime.fromtimestamp(int(float(raw)), tz=UTC)
        except (OverflowError, OSError, ValueError):  # beyond year 9999, or inf
            raise DateValueError(f"{text[:40]!r} is not a timestamp within the years 1-9999") from None
    if _ISO_DATE_RE.match(raw):
        try:
            return datetime.fromisoformat(raw)
        except ValueError as exc:
            raise DateValueError(f"{text!r} is not a valid ISO 8601 date: {exc}") from None
    m = _LOCAL_RE.match(raw)
    if not m:
        example = _example(culture)
        raise DateValueError(f"{text!r} is not a date; send {example} or ISO 8601 (2024-05-27[T14:30:00])")
    a, sep, b, year, hh, mi, ss, ampm = m.groups()
    day, month = _day_month(int(a), int(b), sep, int(year), culture, text)
    hour = int(hh or 0)
    if ampm:
        if not 1 <= hour <= 12:
            raise DateValueError(f"{text!r}: hour {hour} does not fit am/pm")
        hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
    try:
        return datetime(int(year), month, day, hour, int(mi or 0), int(ss or 0))
    except ValueError as exc:
        raise DateValueError(f"{text!r} is not a valid date: {exc}") from None


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _day_month(a: int, b: int, sep: str, year: int, culture: Culture, text: str) -> tuple[int, int]:
    """(day, month) of `a<sep>b<sep>year`. Dots are always day first (no culture writes MM.DD);
    slashes follow the culture; with an unknown culture only a value with one valid reading is read."""
    if sep == ".":
        return a, b
    preferred = culture.order if culture.separator == "/" else ""
    dmy, mdy = (a, b), (b, a)
    if preferred:
        first, second = (dmy, mdy) if preferred == "dmy" else (mdy, dmy)
        # the portal writes its own order; the other reading only when the first cannot be a date
        if _valid(year, first[1], first[0]) or not _valid(year, second[1], second[0]):
            return first
        return second
    dmy_ok, mdy_ok = _valid(year, dmy[1], dmy[0]), _valid(year, mdy[1], mdy[0])
    if dmy_ok and mdy_ok and dmy != mdy:
        if culture.known:
            fix = f"the portal's culture is {culture.describe()}, so send that form or ISO 8601 (2024-05-27)"
        else:
            fix = (
                "the portal's culture is not known: set it with `b24robots installations culture <portal> en|fr|...` "
                "or send ISO 8601 (2024-05-27)"
            )
        raise DateValueError(f"{text!r} is ambiguous (day/month or month/day); {fix}")
    return dmy if dmy_ok else mdy


def _example(culture: Culture) -> str:
    if culture.order == "mdy":
        return "MM/DD/YYYY[ hh:mm:ss am]"
    if culture.separator == "/":
        return "DD/MM/YYYY[ HH:MM:SS]"
    return "DD.MM.YYYY[ HH:MM:SS]"


def dump_date(value: date) -> str:
    """`YYYY-MM-DD`: read as a date by every culture (ISO fallback of `Value\\Date`)."""
    return value.strftime("%Y-%m-%d") if not isinstance(value, datetime) else value.date().strftime("%Y-%m-%d")


def dump_datetime(value: datetime | date | int | float) -> str:
    """ISO 8601 (offset kept when known) or, for a number, a unix timestamp: both read on every culture."""
    if isinstance(value, bool):
        raise DateValueError(f"expected a datetime, got {value!r}")
    if isinstance(value, int | float):
        return str(int(value))
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat()
    return datetime(value.year, value.month, value.day).isoformat()


__all__ = [
    "UNKNOWN",
    "Culture",
    "DateValueError",
    "check_culture",
    "culture_for",
    "dump_date",
    "dump_datetime",
    "parse_date",
    "parse_datetime",
]
