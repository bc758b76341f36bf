"""Parameter declarations, exactly: language keys, flags, defaults, list order, inheritance, dumping."""

from __future__ import annotations

import pytest

from b24robots import Int, Params, String
from b24robots.errors import DeclarationError, InputError
from b24robots.robots.params import Param, default_outputs, dump_values, localize


def test_language_keys_are_lower_cased_and_ua_falls_back_to_ru() -> None:
    p = String({"EN": "Phone", "Ru": "Телефон"})
    assert p.to_property()["Name"] == {"en": "Phone", "ru": "Телефон"}
    assert localize(p.name, "UA") == "Телефон"  # the portal shows ru to a ua user
    assert localize({"en": "Phone", "de": "Telefon"}, "ua") == "Phone"
    assert localize({"de": "Telefon"}, "fr") == "Telefon"


def test_a_scalar_default_of_a_multiple_parameter_is_a_list() -> None:
    class In(Params):
        tags = String("Tags", multiple=True, default="vip")

    assert In().tags == ["vip"]
    assert In.tags.parse(None) == ["vip"] and In.tags.parse("") == ["vip"]
    assert In.tags.parse(["", ""]) == ["vip"]  # empty strings are no values


def test_a_required_parameter_with_a_default_takes_the_default_when_missing() -> None:
    assert String("Channel", required=True, default="sms").parse(None) == "sms"
    with pytest.raises(InputError, match="is required"):
        String("Phone", required=True).parse("")


def test_one_value_for_a_single_parameter() -> None:
    with pytest.raises(InputError, match="expects one value but 2 arrived"):
        String("Phone").parse(["+1", "+2"])


def test_a_dict_shaped_list_is_read_in_numeric_key_order() -> None:
    tags = String("Tags", multiple=True)
    assert tags.parse({"10": "k", "2": "c", "0": "a", "1": "b"}) == ["a", "b", "c", "k"]


def test_document_flags_take_y_and_n_in_any_case() -> None:
    lower = Param.from_document("tags", {"name": "Tags", "multiple": "y", "required": "n"})
    assert lower.multiple is True and lower.required is False
    upper = Param.from_document("tags", {"name": "Tags", "multiple": "N", "required": "Y"})
    assert upper.multiple is False and upper.required is True
    with pytest.raises(DeclarationError, match="'Y'/'N'"):
        Param.from_document("tags", {"name": "Tags", "required": "yes"})


def test_a_subclass_overrides_what_it_inherits_nearest_first() -> None:
    class Base(Params):
        text = String("Base text")
        n = Int("N")

    class Middle(Base):
        text = String("Middle text")

    class Leaf(Middle):
        extra = String("Extra")

    params = {p.key: p for p in Leaf.params()}
    assert params["text"].name == "Middle text" and list(params) == ["text", "n", "extra"]


def test_dumping_outputs() -> None:
    tags, text = String("Tags", multiple=True, key="Tags"), String("Text", key="Text")
    assert dump_values([tags, text], {"Tags": None, "Text": None}) == {"Tags": []}
    assert dump_values([tags, text], {"TAGS": ["a"], "Text": "x"}) == {"Tags": ["a"], "Text": "x"}
    with pytest.raises(InputError, match="not a declared output"):
        dump_values([tags], {"other": "x"})
    assert default_outputs([Int("N", key="n", default=0), String("S", key="s", default="")]) == {"n": "0", "s": ""}


def test_declarations_the_portal_would_refuse_are_refused_here() -> None:
    with pytest.raises(DeclarationError, match="does not fit"):
        Int("N", default="many")
    with pytest.raises(DeclarationError, match="invalid"):
        String("X", key="1st")
    prop = String("Channel", default="sms").to_property()
    assert prop["Required"] == "N" and prop["Default"] == "sms"
