"""The journal's view of parsed inputs and the cut of messages sent to the portal (robots/values.py)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from b24robots.robots.values import MAX_LOG_MESSAGE, jsonable, short


def test_jsonable_writes_dates_as_iso_text_inside_lists_too() -> None:
    moscow = timezone(timedelta(hours=3))
    values = {
        "day": date(2024, 2, 29),
        "at": datetime(2024, 2, 29, 9, 30, tzinfo=moscow),
        "days": [date(2024, 1, 1), date(2024, 12, 31)],
        "n": 5,
        "tags": ["a", "b"],
    }
    assert jsonable(values) == {
        "day": "2024-02-29",
        "at": "2024-02-29T09:30:00+03:00",
        "days": ["2024-01-01", "2024-12-31"],
        "n": 5,
        "tags": ["a", "b"],
    }


def test_short_keeps_text_up_to_the_limit_and_cuts_with_an_ellipsis() -> None:
    assert short("x" * MAX_LOG_MESSAGE) == "x" * MAX_LOG_MESSAGE
    cut = short("x" * (MAX_LOG_MESSAGE + 1))
    assert len(cut) == MAX_LOG_MESSAGE and cut.endswith("…") and cut[:-1] == "x" * (MAX_LOG_MESSAGE - 1)
    assert short("abcdef", 4) == "abc…"
