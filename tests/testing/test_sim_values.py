"""Returned dates read the way a portal of each culture reads them (bizproc `value/date.php`,
`value/datetime.php`, `main/lib/type/date.php::parse`).

The expectations below were produced by running Bitrix's `Type\\Date::parse` logic (PHP 8.2
`date_parse_from_format`, one trailing/missing-data error tolerated) on the same strings with the
ru `d.m.Y H:i:s`, en `m/d/Y h:i:s a` and fr `d/m/Y H:i:s` site formats; "RAW" means `Value\\DateTime`
got no timestamp and the workflow keeps the string.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from b24robots.testing.values import internal_date

Env = Any
Robot = Callable[..., dict[str, Any]]
RAW = "RAW"
PLUS3 = timezone(timedelta(hours=3))

ORACLE: list[tuple[str, str, Any]] = [
    ("ru", "2024-05-27", datetime(2024, 5, 27)),
    ("en", "2024-05-27", datetime(2024, 5, 27)),
    ("fr", "2024-05-27", datetime(2024, 5, 27)),
    ("ru", "2024-05-27T14:30:00+03:00", datetime(2024, 5, 27, 14, 30, tzinfo=PLUS3)),
    ("en", "2024-05-27T14:30:00+03:00", datetime(2024, 5, 27, 14, 30, tzinfo=PLUS3)),
    ("fr", "2024-05-27T14:30:00+03:00", datetime(2024, 5, 27, 14, 30, tzinfo=PLUS3)),
    ("en", "2024-05-27T14:30:00", datetime(2024, 5, 27, 14, 30)),
    ("ru", "1716809400", datetime(2024, 5, 27, 11, 30, tzinfo=UTC)),
    ("en", "1716809400", datetime(2024, 5, 27, 11, 30, tzinfo=UTC)),
    ("fr", "12.5", datetime(1970, 1, 1, 0, 0, 12, tzinfo=UTC)),
    ("ru", "27.05.2024", datetime(2024, 5, 27)),
    ("en", "27.05.2024", RAW),
    ("fr", "27.05.2024", RAW),
    ("ru", "05/27/2024 02:30:00 pm", RAW),
    ("en", "05/27/2024 02:30:00 pm", datetime(2024, 5, 27, 14, 30)),
    # d/m/Y reads month 27 and \DateTime rolls it over into 2026
    ("fr", "05/27/2024 02:30:00 pm", datetime(2026, 3, 5, 2, 30)),
    ("en", "done", RAW),
]


@pytest.mark.parametrize(("culture", "text", "expected"), ORACLE)
def test_returned_datetimes_as_the_portal_reads_them(culture: str, text: str, expected: Any) -> None:
    assert internal_date(text, True, culture) == (text if expected == RAW else expected)


@pytest.mark.parametrize(("culture", "text", "expected"), ORACLE)
def test_returned_dates_keep_the_day(culture: str, text: str, expected: Any) -> None:
    got = internal_date(text, False, culture)
    assert got == (text if expected == RAW else expected.date())


def test_serialized_offset_is_subtracted() -> None:
    assert internal_date("27.05.2024 14:30:00 [3600]", True, "ru") == datetime(2024, 5, 27, 13, 30)
    assert internal_date("27.05.2024 [3600]", False, "de") == date(2024, 5, 27)


async def test_a_non_date_output_stays_a_raw_string(env: Env, robot: Robot) -> None:
    returns = {"day": {"Name": "Day", "Type": "date"}, "moment": {"Name": "Moment", "Type": "datetime"}}
    await env.ok("bizproc.robot.add", robot(RETURN_PROPERTIES=returns))
    wf = await env.sim.start_robot(env.portal, "send_sms", properties={"phone": "1"})
    assert env.portal.language == "en"
    sent = await env.ok(
        "bizproc.event.send",
        {
            "event_token": wf.event_token,
            "return_values": {"day": "27.05.2024", "moment": "2024-05-27T14:30:00+03:00"},
        },
    )
    assert sent is True
    await wf.closed(timeout=2)
    assert wf.return_values["day"] == "27.05.2024"  # DD.MM.YYYY is not a date on an en portal
    assert wf.return_values["moment"] == datetime(2024, 5, 27, 14, 30, tzinfo=PLUS3)
