"""Each parameter type: parse(dump(v)) == v, the portal's wire spellings, and clear errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b24robots.errors import DeclarationError, InputError
from b24robots.robots.dates import culture_for
from b24robots.robots.params import Param, parse_values
from b24robots.robots.types import ParamType

OPTIONS = {"sms": "SMS", "wa": "WhatsApp", "tg": "Telegram"}

texts = st.text(min_size=1).filter(lambda s: s.strip() == s and s != "")
VALUES: dict[ParamType, st.SearchStrategy[Any]] = {
    ParamType.STRING: texts,
    ParamType.TEXT: st.text(min_size=1).filter(lambda s: s != ""),
    ParamType.INT: st.integers(min_value=-(2**63), max_value=2**63 - 1),  # PHP's int; beyond it is refused
    ParamType.DOUBLE: st.floats(allow_nan=False, allow_infinity=False),
    ParamType.BOOL: st.booleans(),
    ParamType.DATE: st.dates(min_value=date(1000, 1, 1)),
    ParamType.DATETIME: st.datetimes(min_value=datetime(1000, 1, 1)).map(lambda d: d.replace(microsecond=0))
    | st.datetimes(
        min_value=datetime(1000, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    ).map(lambda d: d.replace(microsecond=0)),
    ParamType.SELECT: st.sampled_from(sorted(OPTIONS)),
    ParamType.USER: st.integers(min_value=1, max_value=10**9) | st.sampled_from(["group_d5", "group_r12"]),
    ParamType.FILE: st.integers(min_value=1, max_value=10**12),
}


def param(ptype: ParamType, multiple: bool = False) -> Param[Any]:
    return Param(
        name="P",
        type=ptype,
        key="p",
        multiple=multiple,
        options=OPTIONS if ptype is ParamType.SELECT else None,
    )


@pytest.mark.parametrize("ptype", list(ParamType))
def test_every_type_has_a_value_strategy(ptype: ParamType) -> None:
    assert ptype in VALUES


def _roundtrip(ptype: ParamType) -> Any:
    @given(value=VALUES[ptype])
    def check(value: Any) -> None:
        p = param(ptype)
        wire = p.dump(value)
        assert isinstance(wire, str)
        assert p.parse(wire) == value
        # the same value arriving as properties[x][0] parses the same
        assert p.parse([wire]) == value
        pm = param(ptype, multiple=True)
        wires = pm.dump([value, value])
        assert pm.parse(wires) == [value, value]

    return check


for _t in ParamType:
    globals()[f"test_roundtrip_{_t.value}"] = _roundtrip(_t)


@pytest.mark.parametrize(
    ("ptype", "wire", "expected"),
    [
        (ParamType.INT, "333", 333),
        (ParamType.INT, "333.0", 333),
        (ParamType.DOUBLE, "1,5", 1.5),
        (ParamType.BOOL, "Y", True),
        (ParamType.BOOL, "n", False),
        (ParamType.BOOL, "1", True),
        (ParamType.BOOL, "false", False),
        (ParamType.USER, "user_1", 1),
        (ParamType.USER, "17", 17),
        (ParamType.USER, "group_d5", "group_d5"),
        (ParamType.FILE, "4412", 4412),
        (ParamType.DATE, "27.05.2024", date(2024, 5, 27)),
        (ParamType.DATE, "05/27/2024", date(2024, 5, 27)),
        (ParamType.DATE, "2024-05-27", date(2024, 5, 27)),
        (ParamType.DATETIME, "27.05.2024 14:30:00", datetime(2024, 5, 27, 14, 30)),
        (ParamType.DATETIME, "27.05.2024 14:30", datetime(2024, 5, 27, 14, 30)),
        (ParamType.DATETIME, "05/27/2024 02:30:00 pm", datetime(2024, 5, 27, 14, 30)),
        (ParamType.DATETIME, "05/27/2024 12:05:00 am", datetime(2024, 5, 27, 0, 5)),
        (
            ParamType.DATETIME,
            "2024-05-27T14:30:00+03:00",
            datetime(2024, 5, 27, 14, 30, tzinfo=timezone(timedelta(hours=3))),
        ),
        # " [N]" is user offset minus server offset: the user's 14:30 is 11:30 on the server's clock
        (ParamType.DATETIME, "27.05.2024 14:30:00 [10800]", datetime(2024, 5, 27, 11, 30)),
        (ParamType.DATETIME, "27.05.2024 14:30:00 [-3600]", datetime(2024, 5, 27, 15, 30)),
        (ParamType.DATE, "27.05.2024 [10800]", date(2024, 5, 27)),
        (ParamType.DATETIME, "1716809400", datetime(2024, 5, 27, 11, 30, tzinfo=UTC)),
        (ParamType.INT, "1 500", 1500),
        (ParamType.INT, "1500.50", 1500),
        (ParamType.INT, "-7,9", -7),
        (ParamType.DOUBLE, "1 234,56", 1234.56),
        (ParamType.DOUBLE, "1\u00a0234,5", 1234.5),
        (ParamType.DOUBLE, "1,234.56", 1234.56),
        (ParamType.DOUBLE, "1.234.567,5", 1234567.5),
        (ParamType.DOUBLE, "0,500", 0.5),
        (ParamType.USER, "Anna Admin [17]", 17),
        (ParamType.SELECT, "wa", "wa"),
        (ParamType.STRING, "Привет, мир", "Привет, мир"),
    ],
)
def test_portal_spellings(ptype: ParamType, wire: str, expected: Any) -> None:
    assert param(ptype).parse(wire) == expected


@pytest.mark.parametrize(
    ("ptype", "wire", "message"),
    [
        (ParamType.INT, "12a", "whole number"),
        (ParamType.DOUBLE, "abc", "not a number"),
        (ParamType.DOUBLE, "inf", "not a number"),
        (ParamType.DOUBLE, "1e999", "finite"),
        (ParamType.BOOL, "maybe", "Y or N"),
        (ParamType.DATE, "31.02.2024", "not a valid date"),
        (ParamType.DATE, "tomorrow", "not a date"),
        (ParamType.DATE, "05/06/2024", "ambiguous"),
        (ParamType.DATE, "1716809400", "a number"),
        (ParamType.INT, "1,500", "unclear"),
        (ParamType.DOUBLE, "1,50.0", "not a number"),
        (ParamType.SELECT, "fax", "not one of the options"),
        (ParamType.DATETIME, "05/27/2024 13:00:00 pm", "am/pm"),
    ],
)
def test_bad_wire_values_name_the_parameter(ptype: ParamType, wire: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        param(ptype).parse(wire)
    assert info.value.key == "p"


def test_empty_string_is_missing_and_required_is_enforced() -> None:
    p = Param(name="P", type=ParamType.INT, key="p", required=True)
    with pytest.raises(InputError, match="required"):
        p.parse("")
    with pytest.raises(InputError, match="required"):
        p.parse(None)
    assert Param(name="P", type=ParamType.INT, key="p", default=5).parse("") == 5
    assert Param(name="P", type=ParamType.INT, key="p", multiple=True).parse(None) == []


def test_single_value_refuses_many() -> None:
    with pytest.raises(InputError, match="one value"):
        param(ParamType.STRING).parse(["a", "b"])


def test_dump_refuses_wrong_python_types() -> None:
    with pytest.raises(InputError, match="whole number"):
        param(ParamType.INT).dump(1.5)
    with pytest.raises(InputError, match="True or False"):
        param(ParamType.BOOL).dump("perhaps")
    with pytest.raises(InputError, match="one value"):
        param(ParamType.STRING).dump(["a"])
    assert param(ParamType.BOOL).dump(True) == "Y"
    assert param(ParamType.USER).dump(7) == "user_7"
    assert param(ParamType.DATE).dump(date(2024, 1, 2)) == "2024-01-02"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "Phone-1"}, "accepts latin letters, digits"),
        ({"key": "1abc"}, "starting with a letter"),
        ({"name": ""}, "name is empty"),
        ({"name": {"english": "x"}}, "two-letter language code"),
        ({"type": "money"}, "unknown parameter type 'money'; use one of"),
        ({"type": "select"}, "give options="),
        ({"type": "int", "options": {"a": "A"}}, "use type 'select'"),
        ({"type": "int", "default": "x"}, "default 'x' does not fit"),
        ({"type": "select", "options": {"a": "A"}, "default": "b"}, "not one of the options"),
    ],
)
def test_declaration_errors_name_the_fix(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"name": "P", "key": "p"}
    base.update(kwargs)
    with pytest.raises(DeclarationError, match=message):
        Param(**base)


@pytest.mark.parametrize(
    ("language", "wire", "expected"),
    [
        ("ru", "05.06.2024", date(2024, 6, 5)),
        ("de", "05.06.2024", date(2024, 6, 5)),
        ("en", "05/06/2024", date(2024, 5, 6)),
        ("fr", "05/06/2024", date(2024, 6, 5)),
        ("es", "05/06/2024", date(2024, 6, 5)),
        ("br", "05/06/2024", date(2024, 6, 5)),
        ("la", "05/06/2024", date(2024, 6, 5)),
        # only one reading is a date: no doubt, whatever the culture
        ("en", "27/05/2024", date(2024, 5, 27)),
        ("fr", "05/27/2024", date(2024, 5, 27)),
        ("", "27/05/2024", date(2024, 5, 27)),
        ("", "05/05/2024", date(2024, 5, 5)),
    ],
)
def test_dates_are_read_in_the_portal_culture(language: str, wire: str, expected: date) -> None:
    assert param(ParamType.DATE).parse(wire, culture=culture_for(language)) == expected


def test_en_datetime_with_am_pm() -> None:
    moment = param(ParamType.DATETIME).parse("05/06/2024 02:30:00 pm", culture=culture_for("en"))
    assert moment == datetime(2024, 5, 6, 14, 30)


@pytest.mark.parametrize("language", ["", "ru", "xx"])
def test_a_slashed_date_with_two_readings_is_refused_without_a_slash_culture(language: str) -> None:
    with pytest.raises(InputError, match="ambiguous") as info:
        param(ParamType.DATE).parse("05/06/2024", culture=culture_for(language))
    assert "ISO 8601" in info.value.reason


def test_outputs_are_iso_8601_or_a_timestamp() -> None:
    assert param(ParamType.DATE).dump(date(2024, 5, 7)) == "2024-05-07"
    assert param(ParamType.DATE).dump(datetime(2024, 5, 7, 23, 59)) == "2024-05-07"
    dt_param = param(ParamType.DATETIME)
    assert dt_param.dump(datetime(2024, 5, 7, 4, 5, 6)) == "2024-05-07T04:05:06"
    aware = datetime(2024, 5, 7, 4, 5, 6, 789, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    assert dt_param.dump(aware) == "2024-05-07T04:05:06-05:30"
    assert dt_param.dump(1716809400) == "1716809400"
    assert dt_param.dump(1716809400.7) == "1716809400"
    with pytest.raises(InputError, match="datetime"):
        dt_param.dump(True)


def test_lenient_readings_are_reported_as_warnings() -> None:
    warnings: list[str] = []
    values = parse_values(
        [param(ParamType.INT), Param(name="Q", type=ParamType.INT, key="q")],
        {"p": "1500.50", "q": ["42"]},
        warnings=warnings,
    )
    assert values == {"p": 1500, "q": 42}
    assert warnings == ["p: '1500.50' is not a whole number; used 1500"]
