"""Example-based tests of the PHP-style form codec: protocol bodies, PHP rules, limits, errors."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from b24robots.errors import ConfigError, FormDecodeError, FormEncodeError
from b24robots.inbound.formcodec import DEFAULT_LIMITS, FormLimits, decode_form, encode_form, flatten_form

ACCESS = "5d971c6800782a4e000011e7000000010000005599262cf2ead07da4b5dd68fb55479e"
REFRESH = "4d16446800782a4e000011e700000001000000196f6f744d817fac72c4f1c9ad438dd4"

# bitrix24-protocol.md §2.5, raw body; the doc elides the two tokens ("5d97…79e", "4d16…dd4"),
# they are written out in full here as in the decoded table.
PROTOCOL_BODY = (
    "workflow_id=681c894d3f0ec8.54818143&code=send_sms&document_id%5B0%5D=crm"
    "&document_id%5B1%5D=CCrmDocumentDeal&document_id%5B2%5D=DEAL_1188&document_type%5B0%5D=crm"
    "&document_type%5B1%5D=CCrmDocumentDeal&document_type%5B2%5D=DEAL"
    "&event_token=681c894d3f0ec8.54818143%7CA36717_5720_22885_29158%7CX3QpQY6RKFD8ULUtOiKllFEZLUaVuDYn"
    ".29c803f2e57290aade3fcfcb061b2aa2d26f682deddb9de32f556040c6041901"
    "&properties%5Bphone%5D=%2B49+30+1234567&properties%5Btext%5D=Hello+%26+welcome"
    "&properties%5Bto%5D=user_1&properties%5Btags%5D%5B0%5D=vip&properties%5Btags%5D%5B1%5D=b2b"
    "&use_subscription=Y&timeout_duration=0&ts=1746700621"
    f"&auth%5Baccess_token%5D={ACCESS}&auth%5Bexpires%5D=1746704221&auth%5Bexpires_in%5D=3600"
    "&auth%5Bscope%5D=crm%2Cbizproc%2Cplacement%2Cuser_brief&auth%5Bdomain%5D=example.bitrix24.com"
    "&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bstatus%5D=L"
    "&auth%5Bclient_endpoint%5D=https%3A%2F%2Fexample.bitrix24.com%2Frest%2F"
    "&auth%5Bmember_id%5D=3d906b2a32030386ccc7274d2313a01b&auth%5Buser_id%5D=1"
    f"&auth%5Brefresh_token%5D={REFRESH}&auth%5Bapplication_token%5D=565be534fe44bce005bae699aa0313f8"
)

# The decoded table of §2.5, nested.
PROTOCOL_DECODED: dict[str, Any] = {
    "workflow_id": "681c894d3f0ec8.54818143",
    "code": "send_sms",
    "document_id": ["crm", "CCrmDocumentDeal", "DEAL_1188"],
    "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
    "event_token": "681c894d3f0ec8.54818143|A36717_5720_22885_29158|X3QpQY6RKFD8ULUtOiKllFEZLUaVuDYn."
    "29c803f2e57290aade3fcfcb061b2aa2d26f682deddb9de32f556040c6041901",
    "properties": {
        "phone": "+49 30 1234567",
        "text": "Hello & welcome",
        "to": "user_1",
        "tags": ["vip", "b2b"],
    },
    "use_subscription": "Y",
    "timeout_duration": "0",
    "ts": "1746700621",
    "auth": {
        "access_token": ACCESS,
        "expires": "1746704221",
        "expires_in": "3600",
        "scope": "crm,bizproc,placement,user_brief",
        "domain": "example.bitrix24.com",
        "server_endpoint": "https://oauth.bitrix.info/rest/",
        "status": "L",
        "client_endpoint": "https://example.bitrix24.com/rest/",
        "member_id": "3d906b2a32030386ccc7274d2313a01b",
        "user_id": "1",
        "refresh_token": REFRESH,
        "application_token": "565be534fe44bce005bae699aa0313f8",
    },
}


def reason_of(body: bytes | str, limits: FormLimits = DEFAULT_LIMITS) -> str:
    with pytest.raises(FormDecodeError) as info:
        decode_form(body, limits)
    assert str(info.value) == info.value.reason
    return info.value.reason


# --- the protocol example ----------------------------------------------------------------------


def test_protocol_body_decodes_to_the_documented_table() -> None:
    assert decode_form(PROTOCOL_BODY.encode()) == PROTOCOL_DECODED
    assert decode_form(PROTOCOL_BODY) == PROTOCOL_DECODED


def test_protocol_body_with_raw_brackets_decodes_the_same() -> None:
    raw = PROTOCOL_BODY.replace("%5B", "[").replace("%5D", "]")
    assert "[" in raw
    assert decode_form(raw) == PROTOCOL_DECODED


def test_protocol_body_is_what_encode_form_writes() -> None:
    assert encode_form(PROTOCOL_DECODED) == PROTOCOL_BODY.encode()
    raw = PROTOCOL_BODY.replace("%5B", "[").replace("%5D", "]")
    assert encode_form(PROTOCOL_DECODED, encode_brackets=False) == raw.encode()


def test_protocol_flatten_form_gives_the_bracket_names() -> None:
    pairs = flatten_form(PROTOCOL_DECODED)
    assert pairs[2:5] == [
        ("document_id[0]", "crm"),
        ("document_id[1]", "CCrmDocumentDeal"),
        ("document_id[2]", "DEAL_1188"),
    ]
    assert ("properties[tags][1]", "b2b") in pairs
    assert ("properties[text]", "Hello & welcome") in pairs
    assert len(pairs) == PROTOCOL_BODY.count("&") + 1


# --- PHP rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a[b][c]=1", {"a": {"b": {"c": "1"}}}),
        ("a[]=x&a[]=y", {"a": ["x", "y"]}),
        ("a[0]=x&a[1]=y", {"a": ["x", "y"]}),
        ("a[1]=y&a[0]=x", {"a": ["x", "y"]}),  # any arrival order
        ("a[5]=x", {"a": {"5": "x"}}),
        ("a[1]=x&a[2]=y", {"a": {"1": "x", "2": "y"}}),
        ("a[]=x&a[5]=y&a[]=z", {"a": {"0": "x", "5": "y", "6": "z"}}),  # `[]` takes the next index
        ("a[2]=x&a[]=y&a[0]=z&a[1]=w", {"a": ["z", "w", "x", "y"]}),
        ("a[-5]=x&a[]=y", {"a": {"-5": "x", "-4": "y"}}),  # PHP 8.3 next index after a negative key
        ("a[01]=x", {"a": {"01": "x"}}),  # not a canonical integer: a string key
        ("a[0]=x&a[01]=y", {"a": {"0": "x", "01": "y"}}),
        ("a[-0]=x", {"a": {"-0": "x"}}),
        ("a[99999999999999999999]=x", {"a": {"99999999999999999999": "x"}}),
        ("a[][b]=1&a[][b]=2", {"a": [{"b": "1"}, {"b": "2"}]}),
        ("a[x][]=1&a[x][]=2&a[y]=3", {"a": {"x": ["1", "2"], "y": "3"}}),
        ("a=1&a=2", {"a": "2"}),  # last wins
        ("a[0]=1&a[0]=2", {"a": ["2"]}),
        ("a=", {"a": ""}),
        ("a", {"a": ""}),  # no `=`
        ("a&b=1", {"a": "", "b": "1"}),
        ("a=b=c", {"a": "b=c"}),
        ("&&a=1&&&b=2&", {"a": "1", "b": "2"}),  # empty pairs skipped
        ("", {}),
        ("=x", {}),  # empty name skipped
        ("[a]=1", {}),  # empty top-level name skipped
        ("[]=1", {}),
        ("a=1&a[b]=2", {"a": {"b": "2"}}),  # later wins: container replaces scalar
        ("a[b]=2&a=1", {"a": "1"}),  # later wins: scalar replaces container
        ("a[b][c]=1&a[b]=2&a[b][d]=3", {"a": {"b": {"d": "3"}}}),
        ("a[b=1", {"a[b": "1"}),  # unclosed: literal key (PHP would write a_b)
        ("a[=1", {"a[": "1"}),
        ("a]b=1", {"a]b": "1"}),
        ("a]=1", {"a]": "1"}),
        ("a[b]c=1", {"a": {"b": "1"}}),  # text after `]` ignored
        ("a[b]c[d]=1", {"a": {"b": "1"}}),
        ("a[b][c=1", {"a": {"b": "1"}}),  # unclosed trailing group dropped
        ("a[b[c]]=1", {"a": {"b[c": "1"}}),  # first `]` closes
        ("a[ ]=1", {"a": {" ": "1"}}),  # not an append (PHP would append); see module docstring
        ("a.b=1&c d=2", {"a.b": "1", "c d": "2"}),  # no `.`/space conversion
        (" a=1", {" a": "1"}),  # no leading-space stripping
        ("a+b=c+d", {"a b": "c d"}),
        ("a=%2B%20+", {"a": "+  "}),
        ("a=%zz%4%", {"a": "%zz%4%"}),  # invalid escapes stay as they are
        ("a=%e2%82%ac%E2%82%AC", {"a": "€€"}),  # both hex cases
        ("a%5Bb%5D%5B%5D=1&a%5bb%5d%5b%5d=2", {"a": {"b": ["1", "2"]}}),  # encoded brackets
        ("a%255B=1", {"a%5B": "1"}),  # a double-encoded bracket is a literal
        ("a[b%5D=1", {"a": {"b": "1"}}),  # mixed raw and encoded
        ("a=%26%3D%25", {"a": "&=%"}),  # encoded separators are data
        ("a%3Db=1", {"a=b": "1"}),
        ("a=x%0D%0Ay=%0A", {"a": "x\r\ny=\n"}),
        ("имя=%D0%B7%D0%BD%D0%B0%D1%87%D0%B5%D0%BD%D0%B8%D0%B5+1", {"имя": "значение 1"}),
        ("%D0%B8%D0%BC%D1%8F[%D0%BA]=%F0%9F%98%80", {"имя": {"к": "😀"}}),
        ("0=a&1=b", {"0": "a", "1": "b"}),  # the top level is always a dict
    ],
)
def test_php_rules(body: str, expected: dict[str, Any]) -> None:
    assert decode_form(body) == expected
    assert decode_form(body.encode()) == expected


def test_leaves_are_always_str() -> None:
    result = decode_form("a[0]=1&a[1]=&b[c]=2.5&d")
    assert result == {"a": ["1", ""], "b": {"c": "2.5"}, "d": ""}


def test_bytearray_and_memoryview_bodies() -> None:
    assert decode_form(bytearray(b"a[]=1")) == {"a": ["1"]}  # type: ignore[arg-type]
    assert decode_form(memoryview(b"a[]=1")) == {"a": ["1"]}  # type: ignore[arg-type]


# --- invalid input -------------------------------------------------------------------------------


def test_invalid_utf8_in_a_value_names_the_key() -> None:
    reason = reason_of(b"ok=1&auth[member_id]=%FF%FE")
    assert reason.startswith("the value of 'auth[member_id]' is not valid UTF-8")


def test_invalid_raw_utf8_is_refused() -> None:
    assert "not valid UTF-8" in reason_of(b"a=\xc3\x28")


def test_invalid_utf8_in_a_key_names_the_pair() -> None:
    assert reason_of(b"a=1&b%C3=2").startswith("the key of pair 2 is not valid UTF-8")


def test_invalid_utf8_value_does_not_leak_the_value() -> None:
    reason = reason_of(b"auth[access_token]=secret%FF")
    assert "secret" not in reason


def test_lone_surrogate_in_str_body() -> None:
    assert "lone surrogate" in reason_of("a=\udc80")


def test_wrong_body_type() -> None:
    assert reason_of(12345) == "body must be bytes or str, not int"  # type: ignore[arg-type]


# --- limits --------------------------------------------------------------------------------------


def test_body_size_limit() -> None:
    body = b"a=" + b"x" * (2_000_000 - 2)
    assert reason_of(body) == "body is 2000000 bytes; the limit is 1048576 (max_body_bytes)"
    assert decode_form(b"a=" + b"x" * (1_048_576 - 2)) == {"a": "x" * (1_048_576 - 2)}


def test_body_size_limit_for_str_counts_utf8_bytes() -> None:
    limits = FormLimits(max_body_bytes=10)
    assert decode_form("a=жжжж", limits) == {"a": "жжжж"}  # 10 bytes
    assert reason_of("a=жжжжж", limits) == "body is 12 bytes; the limit is 10 (max_body_bytes)"
    assert reason_of("a=xxxxxxxxxx", limits) == "body is 12 characters; the limit is 10 bytes (max_body_bytes)"


def test_depth_limit() -> None:
    at_limit = "a" + "".join(f"[k{i}]" for i in range(8)) + "=1"
    result: Any = decode_form(at_limit)
    for i in range(8):
        result = result["a" if i == 0 else f"k{i - 1}"]
    assert result == {"k7": "1"}
    too_deep = "a" + "[x]" * 9 + "=1"
    assert reason_of(too_deep) == f"key {too_deep[:-2]!r} is nested 9 levels deep; the limit is 8 (max_depth)"


def test_depth_limit_counts_appends_and_encoded_brackets() -> None:
    assert "nested 3 levels deep; the limit is 2 (max_depth)" in reason_of(
        "a%5B%5D%5B%5D%5B%5D=1", FormLimits(max_depth=2)
    )
    assert reason_of("a[b]=1", FormLimits(max_depth=0)).endswith("the limit is 0 (max_depth)")


def test_depth_limit_message_is_cut_short() -> None:
    reason = reason_of("a" + "[x]" * 100_000 + "=1")
    assert "nested 100000 levels deep" in reason
    assert len(reason) < 200


def test_key_count_limit() -> None:
    body = "&".join(f"k{i}=v" for i in range(5001))
    assert reason_of(body) == "body has 5001 key=value pairs; the limit is 5000 (max_keys)"
    ok = "&&".join(f"k{i}=v" for i in range(5000)) + "&&&"  # empty pairs do not count
    assert len(decode_form(ok)) == 5000


def test_list_length_limit_for_appends() -> None:
    ok = "&".join(["a[]=x"] * 1000)
    assert len(decode_form(ok)["a"]) == 1000
    too_long = ok + "&a[]=y"
    assert reason_of(too_long) == ("key 'a[]' appends at list index 1000; the limit is 1000 items (max_list_length)")


def test_list_length_limit_for_indexed_runs() -> None:
    ok = "&".join(f"p[tags][{i}]=x" for i in range(1000))
    assert len(decode_form(ok)["p"]["tags"]) == 1000
    too_long = ok + "&p[tags][1000]=y"
    assert reason_of(too_long) == "list 'p[tags]' has 1001 items; the limit is 1000 (max_list_length)"


def test_a_replaced_container_does_not_trip_the_list_limit() -> None:
    body = "&".join(f"a[{i}]=x" for i in range(1001)) + "&a=1"
    assert decode_form(body) == {"a": "1"}
    body = "&".join(f"a[b][{i}]=x" for i in range(1001)) + "&a=1"
    assert decode_form(body) == {"a": "1"}


def test_huge_index_is_a_dict_key_not_a_huge_list() -> None:
    start = time.perf_counter()
    assert decode_form("a[999999999]=x") == {"a": {"999999999": "x"}}
    assert decode_form("a[0]=x&a[999999999]=y") == {"a": {"0": "x", "999999999": "y"}}
    assert time.perf_counter() - start < 0.1
    assert reason_of("a[999999999]=x&a[]=y") == (
        "key 'a[]' appends at list index 1000000000; the limit is 1000 items (max_list_length)"
    )


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"FormLimits\.max_depth must be a non-negative int"):
        FormLimits(max_depth=-1)
    with pytest.raises(ConfigError, match=r"FormLimits\.max_keys"):
        FormLimits(max_keys="10")  # type: ignore[arg-type]
    assert FormLimits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_body_bytes == 1_048_576


# --- size and complexity (speed itself is measured by bench/formcodec.py) ------------------------


def test_one_mebibyte_of_five_thousand_keys_decodes() -> None:
    text = "Сделка №42: клиент ждёт звонка, deal is hot & urgent; "
    data = {
        "properties": {f"field_{i}": (text * 4)[: 40 + i % 40] for i in range(4000)},
        "tags": [f"tag-{i}" for i in range(999)],
        "code": "x",
    }
    body = encode_form(data)
    assert 0.6 * 1_048_576 < len(body) <= 1_048_576
    assert body.count(b"&") + 1 == 5000
    assert decode_form(body) == data


HOSTILE_BODIES = {
    "appends": b"a[]=x&" * 170_000,
    "tiny pairs": b"a=x&" * 250_000,
    "stray percents": b"%" * 1_000_000,
    "escapes": b"%41" * 340_000,
    "long unclosed name": b"a" + b"[" * 1_000_000,
    "deep name": b"a" + b"[]" * 500_000 + b"=1",
    "bracket soup": b"a[][" * 250_000,
    "ampersands": b"&" * 1_000_000,
    "equals": b"=" * 1_000_000,
    "invalid utf-8": b"a=" + b"\xff" * 1_000_000,
    "many containers": b"&".join(b"k%d[b][c]=x" % i for i in range(70_000)),
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_bodies_take_linear_time(body: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(FormDecodeError):
        decode_form(body + b"&" + b"x" * 100_000)  # over max_body_bytes: refused before any work
    with contextlib.suppress(FormDecodeError):
        decode_form(body[:1_048_576])  # default limits stop most of these early
    assert time.perf_counter() - start < 3
    # With limits raised out of the way the work is still linear: about a second per MiB at
    # worst, where anything quadratic in a 1 MiB body would take minutes. (The bounds are an
    # order of magnitude apart from both, so a busy CI machine does not matter.)
    raised = FormLimits(max_keys=10**6, max_list_length=10**6, max_depth=64)
    start = time.perf_counter()
    with contextlib.suppress(FormDecodeError):
        decode_form(body[:1_048_576], raised)
    assert time.perf_counter() - start < 20


# --- encoding ------------------------------------------------------------------------------------


def test_encode_like_http_build_query() -> None:
    data = {
        "a": {"b": ["x y", "~é*'()!"], "c": 1, "d": True, "e": None, "f": [], "g": {}, "h": False, "i": 1.5},
        "k": ("t0", "t1"),
    }
    assert encode_form(data) == (
        b"a%5Bb%5D%5B0%5D=x+y&a%5Bb%5D%5B1%5D=%7E%C3%A9%2A%27%28%29%21&a%5Bc%5D=1&a%5Bd%5D=1"
        b"&a%5Be%5D=&a%5Bh%5D=0&a%5Bi%5D=1.5&k%5B0%5D=t0&k%5B1%5D=t1"
    )
    assert encode_form(data, encode_brackets=False) == (
        b"a[b][0]=x+y&a[b][1]=%7E%C3%A9%2A%27%28%29%21&a[c]=1&a[d]=1&a[e]=&a[h]=0&a[i]=1.5&k[0]=t0&k[1]=t1"
    )
    assert flatten_form(data) == [
        ("a[b][0]", "x y"),
        ("a[b][1]", "~é*'()!"),
        ("a[c]", "1"),
        ("a[d]", "1"),
        ("a[e]", ""),
        ("a[h]", "0"),
        ("a[i]", "1.5"),
        ("k[0]", "t0"),
        ("k[1]", "t1"),
    ]


def test_empty_containers_vanish_and_that_is_the_lossy_case() -> None:
    data = {"a": [], "b": {}, "c": {"d": []}, "e": "1"}
    assert encode_form(data) == b"e=1"
    assert decode_form(encode_form(data)) == {"e": "1"}
    assert encode_form({}) == b""


def test_dict_keyed_by_a_run_comes_back_as_a_list() -> None:
    assert decode_form(encode_form({"a": {"1": "y", "0": "x"}})) == {"a": ["x", "y"]}


def test_brackets_inside_keys_are_escaped_data() -> None:
    data = {"a]": {"b[c": "1"}, "x[y": "2"}
    assert decode_form(encode_form(data)) == data
    assert decode_form(encode_form(data, encode_brackets=False)) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"": "x"}, "top-level key '' cannot be written"),
        ({"[a": "x"}, "top-level key '[a' cannot be written"),
        ({"a[b]": "x"}, "top-level key 'a[b]' cannot be written"),
        ({"a[b": {"c": "x"}}, "top-level key 'a[b' contains '[' and holds a container"),
        ({"a": {"": "x"}}, "key '' under 'a' cannot be written"),
        ({"a": {"b": {"c]": "x"}}}, "key 'c]' under 'a[b]' cannot be written"),
        ({"a": {None: "x"}}, "key None under 'a' must be a str"),
        ({"a": {True: "x"}}, "key True under 'a' must be a str"),
        ({"a": b"x"}, "value of 'a' is a bytes"),
        ({"a": [object()]}, "value of 'a[0]' is a object"),
        ({"a": "\udc80"}, "the value of 'a' contains a lone surrogate"),
        ({"\udc80": "x"}, "contains a lone surrogate"),
    ],
)
def test_encode_refuses_what_a_form_cannot_carry(data: dict[str, Any], message: str) -> None:
    with pytest.raises(FormEncodeError) as info:
        encode_form(data)
    assert message in info.value.reason


def test_encode_refuses_a_non_mapping_and_cycles() -> None:
    with pytest.raises(FormEncodeError, match="the top level must be a mapping, not list"):
        encode_form([1, 2])  # type: ignore[arg-type]
    cyclic: dict[str, Any] = {"a": {}}
    cyclic["a"]["b"] = cyclic["a"]
    with pytest.raises(FormEncodeError, match=r"value of 'a\[b\]' contains itself"):
        encode_form(cyclic)
    shared = ["x"]
    assert decode_form(encode_form({"a": shared, "b": shared})) == {"a": ["x"], "b": ["x"]}


def test_encode_very_deep_value_without_recursion() -> None:
    deep: dict[str, Any] = {"v": "1"}
    for _ in range(5000):
        deep = {"k": deep}
    body = encode_form({"a": deep})
    assert body.startswith(b"a%5Bk%5D%5Bk%5D")
    assert "nested 5001 levels deep" in reason_of(body, FormLimits(max_depth=8, max_body_bytes=10**6))
    assert decode_form(body, FormLimits(max_depth=6000))["a"]["k"]["k"]["k"] is not None


# -- near misses: integer keys, appends and limits at their exact edges -----------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # 20 digits are a string key in PHP, so `[]` starts at 0
        ("a[10000000000000000000]=x&a[]=y", {"a": {"10000000000000000000": "x", "0": "y"}}),
        ("a[-0]=x&a[]=y", {"a": {"-0": "x", "0": "y"}}),  # "-0" stays a string
        ("a[-9223372036854775809]=x&a[]=y", {"a": {"-9223372036854775809": "x", "0": "y"}}),  # below int64
        ("a[-9223372036854775808]=x&a[]=y", {"a": {"-9223372036854775808": "x", "-9223372036854775807": "y"}}),
        ("a[]=x&a[1]=y&a[]=z", {"a": ["x", "y", "z"]}),  # an explicit next index moves the append past it
        ("a[1]=x&a[-1]=y", {"a": {"1": "x", "-1": "y"}}),  # not 0..n-1: a dict
        ("a%5bb%5d=1&c%5Bd%5D=2", {"a": {"b": "1"}, "c": {"d": "2"}}),  # escaped brackets in either case
        ("a[b]x[c]=1", {"a": {"b": "1"}}),  # text after `]` ends the name
        ("a=x%20=y", {"a": "x =y"}),  # a literal `=` in a value next to an escape
    ],
)
def test_integer_keys_and_brackets_at_their_edges(body: str, expected: dict[str, object]) -> None:
    assert decode_form(body) == expected


def test_a_19_digit_key_is_an_integer_so_an_append_after_it_is_over_the_list_limit() -> None:
    with pytest.raises(FormDecodeError, match="max_list_length"):
        decode_form("a[1000000000000000000]=x&a[]=y")


def test_limits_hold_exactly_at_their_values() -> None:
    limits = FormLimits(max_depth=2, max_keys=2, max_list_length=2)
    assert decode_form("a[b][c]=1&d=2", limits) == {"a": {"b": {"c": "1"}}, "d": "2"}
    with pytest.raises(FormDecodeError, match="max_depth"):
        decode_form("a[b][c][d]=1", limits)
    with pytest.raises(FormDecodeError, match="max_keys"):
        decode_form("a=1&b=2&c=3", limits)
    lists = FormLimits(max_list_length=2)
    assert decode_form("a[]=1&a[]=2", lists) == {"a": ["1", "2"]}
    with pytest.raises(FormDecodeError, match="max_list_length"):
        decode_form("a[]=1&a[]=2&a[]=3", lists)


def test_encoding_writes_tilde_and_bools_as_php_does() -> None:
    assert encode_form({"a": "~x", "t": True, "f": False}) == b"a=%7Ex&t=1&f=0"
