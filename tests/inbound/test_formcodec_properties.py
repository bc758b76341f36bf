"""Property tests of the form codec: round trips, qs-codec as an oracle, total error handling."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

import qs_codec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from b24robots.errors import FormDecodeError
from b24robots.inbound.formcodec import DEFAULT_LIMITS, FormLimits, decode_form, encode_form, flatten_form

DEEP = FormLimits(max_depth=64)


def is_run(keys: Any) -> bool:
    keys = list(keys)
    return set(keys) == {str(i) for i in range(len(keys))}


def top_key_ok(key: str) -> bool:
    """Top-level keys a form name can carry when they hold a container (see encode_form)."""
    return "[" not in key


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(depth(v) for v in value.values())
    if isinstance(value, list):
        return 1 + max(depth(v) for v in value)
    return 0


# The value space decode_form(encode_form(x)) == x promises: dict[str, V] | list[V] | str with no
# empty containers and no dict keyed exactly "0".."n-1" (those come back as lists). Keys: top-level
# non-empty without '[', nested non-empty without ']'; any other character is fine.
texts = st.text(max_size=12)
nested_keys = st.text(min_size=1, max_size=8).filter(lambda k: "]" not in k)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, min_size=1, max_size=4),
        st.dictionaries(nested_keys, children, min_size=1, max_size=4).filter(lambda d: not is_run(d)),
    )


values = st.recursive(texts, containers, max_leaves=16)
forms = st.dictionaries(st.text(min_size=1, max_size=8).filter(top_key_ok), values, max_size=5)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(forms)
@example({"a": {"b": ["x", {"c": "y"}]}, "имя": "значение + & = % ~"})
@example({"a": {"b[c": "1", "d[": ["x"]}, "e]": "2", "f[g": "3"})
@example({"a": {"-1": "x", "01": "y", "1": "z"}})
def test_decode_inverts_encode(data: dict[str, Any]) -> None:
    body = encode_form(data)
    assert decode_form(body, DEEP) == data
    assert decode_form(body.decode("ascii"), DEEP) == data
    assert decode_form(encode_form(data, encode_brackets=False), DEEP) == data
    assert encode_form(decode_form(body, DEEP)) == body  # canonical bodies survive the other way


@settings(max_examples=100)
@given(forms)
def test_flatten_form_lists_the_pairs_encode_form_writes(data: dict[str, Any]) -> None:
    pairs = flatten_form(data)
    body = encode_form(data, encode_brackets=False)
    written = [part.split(b"=", 1) for part in body.split(b"&")] if body else []
    assert len(written) == len(pairs)
    for (name, value), (raw_name, raw_value) in zip(pairs, written, strict=True):
        assert unquote_to_bytes(raw_name.replace(b"+", b" ")).decode() == name
        assert unquote_to_bytes(raw_value.replace(b"+", b" ")).decode() == value


# --- qs-codec as an oracle --------------------------------------------------------------------------
#
# qs (a port of the JavaScript `qs` package) differs from PHP where PHP itself is odd, so the
# generated values stay where both agree:
# * keys contain a letter and no brackets: qs turns a container with numeric keys into a list even
#   when the keys do not form 0..n-1 (sparse lists are compacted), and parses nested brackets
#   inside a key differently from PHP;
# * keys contain no '.', '%' or '&'-like syntax qs might treat as notation (allow_dots stays off);
# * nesting stays within max_depth, because qs keeps deeper segments as a literal key;
# * no list directly inside a list: qs merges `a[0][0]=x&a[0][1]=y` into [["x"], ["y"]] where PHP
#   (and we) give [["x", "y"]].
# Options: duplicates=LAST (PHP's last-wins), list_limit and depth equal to our limits with
# raise_on_limit_exceeded/strict_depth on, and a parameter limit above our max_keys.

qs_keys = st.from_regex(r"[a-zA-Zа-я][a-zA-Zа-я0-9_ \-]{0,6}", fullmatch=True)


def qs_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children.filter(lambda c: not isinstance(c, list)), min_size=1, max_size=4),
        st.dictionaries(qs_keys, children, min_size=1, max_size=4),
    )


qs_values = st.recursive(texts, qs_containers, max_leaves=12).filter(lambda v: depth(v) <= DEFAULT_LIMITS.max_depth)
qs_forms = st.dictionaries(qs_keys, qs_values, max_size=5)

QS_DECODE = qs_codec.DecodeOptions(
    list_limit=DEFAULT_LIMITS.max_list_length,
    depth=DEFAULT_LIMITS.max_depth,
    strict_depth=True,
    raise_on_limit_exceeded=True,
    parameter_limit=DEFAULT_LIMITS.max_keys + 1,
    duplicates=qs_codec.Duplicates.LAST,
)
QS_ENCODE = qs_codec.EncodeOptions(list_format=qs_codec.ListFormat.INDICES, format=qs_codec.Format.RFC1738)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(qs_forms)
@example({"properties": {"tags": ["vip", "b2b"], "text": "Hello & welcome"}, "code": "send_sms"})
@example({"a": [{"b": ["y", "z"]}, "x"]})
def test_decode_agrees_with_qs(data: dict[str, Any]) -> None:
    body = encode_form(data).decode("ascii")
    ours = decode_form(body)
    assert ours == qs_codec.decode(body, QS_DECODE)
    assert ours == data
    raw_brackets = encode_form(data, encode_brackets=False).decode("ascii")
    assert decode_form(raw_brackets) == qs_codec.decode(raw_brackets, QS_DECODE)


def php_urlencode_from_qs(text: str) -> str:
    """qs keeps `~ ( )` unescaped in RFC 1738 mode; PHP's urlencode escapes them."""
    return text.replace("~", "%7E").replace("(", "%28").replace(")", "%29")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(qs_forms, st.text(max_size=20))
@example({"a": {"b": ["x y", "~()*'!"]}}, "€ 😀")
def test_encode_agrees_with_qs_indices_format(data: dict[str, Any], extra: str) -> None:
    data = {**data, "extra": extra}
    expected = php_urlencode_from_qs(qs_codec.encode(data, QS_ENCODE))
    assert encode_form(data).decode("ascii") == expected


# --- percent-decoding against the standard library --------------------------------------------------

escape_soup = st.lists(
    st.sampled_from(
        [
            *("%", "+", "=", "%4", "%41", "%4a", "%5B", "%5d", "%25", "%zz", "%%", "%D0%BF", "%FF", "%C3"),
            *("%A9", "a", "F", "7", " ", "\\", "\n", "=3D", "=\n", "[", "]", "ж"),
        ]
    ),
    max_size=16,
).map("".join)


@settings(max_examples=500)
@given(escape_soup)
@example("%+%2+%+F%41BC")
@example("=%3D=\r\n")
def test_values_decode_like_php_url_decode(raw: str) -> None:
    # PHP's php_url_decode: `+` is a space, `%XX` a byte, any other `%` stays; urllib agrees
    # once `+` is replaced first (a space is never a hex digit).
    try:
        expected: str | None = unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        expected = None
    try:
        got: str | None = decode_form("v=" + raw)["v"]
    except FormDecodeError:
        got = None
    assert got == expected


@settings(max_examples=300)
@given(escape_soup)
def test_plain_names_decode_like_php_url_decode(raw: str) -> None:
    raw = raw.replace("=", "%3D")
    try:
        name = unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        try:
            decode_form(raw + "=1")
        except FormDecodeError as exc:
            assert exc.reason.startswith("the key of pair 1 is not valid UTF-8")
            return
        raise AssertionError("invalid UTF-8 in a name was accepted") from None
    result = decode_form(raw + "=1")
    if name and "[" not in name:
        assert result == {name: "1"}
    elif not name or name.startswith("["):
        assert result == {}


# --- totality: any input gives a value or FormDecodeError -----------------------------------------

fragments = st.lists(
    st.sampled_from(
        [
            *("a", "b", "0", "1", "-1", "01", "999999999999999999999", "[", "]", "[]", "[0]", "[x]", "%5B"),
            *("%5D", "=", "&", "&&", "+", "%", "%FF", "%C3%A9", "%00", "é", " ", ".", "\x00", "\udc80"),
        ]
    ),
    max_size=40,
).map("".join)

small_limits = st.builds(
    FormLimits,
    max_body_bytes=st.integers(0, 300),
    max_depth=st.integers(0, 4),
    max_keys=st.integers(0, 8),
    max_list_length=st.integers(0, 4),
)


def check_shape(value: Any, limits: FormLimits, level: int = 0) -> None:
    if isinstance(value, str):
        return
    assert level <= limits.max_depth
    if isinstance(value, list):
        assert 0 < len(value) <= limits.max_list_length
        items = value
    else:
        assert isinstance(value, dict)
        assert all(isinstance(k, str) for k in value)
        assert level == 0 or (value and not is_run(value))
        items = list(value.values())
    for item in items:
        check_shape(item, limits, level + 1)


@settings(max_examples=500)
@given(
    st.one_of(st.binary(max_size=300), st.text(max_size=100), fragments),
    st.one_of(st.just(DEFAULT_LIMITS), small_limits),
)
def test_any_input_decodes_or_raises_form_decode_error(body: bytes | str, limits: FormLimits) -> None:
    try:
        result = decode_form(body, limits)
    except FormDecodeError as exc:
        assert exc.reason
        return
    assert isinstance(result, dict)
    check_shape(result, limits)
    assert len(result) <= limits.max_keys
