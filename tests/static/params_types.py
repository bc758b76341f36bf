"""Checked by mypy (pyproject's `files`), not run: the parameter factories give typed attributes.

`String("Phone")` reads as `str | None` on an instance, `required=True` or a default as `str`,
`multiple=True` as `list[str]`; the same for every factory and `Select`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import assert_type

from b24robots import Bool, Date, DateTime, Double, File, Int, Params, Select, String, Text, User


class Inputs(Params):
    phone = String("Phone")
    name = String("Name", required=True)
    tags = String("Tags", multiple=True)
    note = Text("Note", default="")
    count = Int("Count", default=0)
    price = Double("Price", required=True)
    ok = Bool("OK")
    day = Date("Day")
    moment = DateTime("Moment", required=True)
    who = User("Who", required=True)
    files = File("Files", multiple=True)
    segment = Select("Segment", options={"a": "A"}, default="a")
    kinds = Select("Kinds", options={"a": "A"}, multiple=True)
    maybe = Select("Maybe", options={"a": "A"})


def check(inputs: Inputs) -> None:
    assert_type(inputs.phone, str | None)
    assert_type(inputs.name, str)
    assert_type(inputs.tags, list[str])
    assert_type(inputs.note, str)
    assert_type(inputs.count, int)
    assert_type(inputs.price, float)
    assert_type(inputs.ok, bool | None)
    assert_type(inputs.day, date | None)
    assert_type(inputs.moment, datetime)
    assert_type(inputs.who, int | str)
    assert_type(inputs.files, list[int | str])
    assert_type(inputs.segment, str)
    assert_type(inputs.kinds, list[str])
    assert_type(inputs.maybe, str | None)
