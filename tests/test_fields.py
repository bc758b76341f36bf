"""Untrusted numbers, flags and URLs (b24robots.fields), and the requests that used to answer 500 with them.

Each HTTP case here was an unauthenticated (install, events) or authenticated (robot call) 500 before
the field helpers: "²".isdigit() is true and int("²") raises, urlsplit("https://[/") raises.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from b24robots import DateTime, File, Int, Params, Router, String
from b24robots.config import Settings, mask_url
from b24robots.connections.config import check_url
from b24robots.errors import ConfigError, InputError
from b24robots.fields import INT64_MAX, as_flag, as_int, host_of, int_field, netloc_of, split_url
from b24robots.inbound.formcodec import encode_form
from b24robots.testing.app_fixtures import RobotHarness


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        (42, 42),
        (str(INT64_MAX), INT64_MAX),
        ("0" * 30 + "5", 5),  # leading zeros do not count against the length
        (str(INT64_MAX + 1), None),
        ("9" * 5000, None),  # int() would raise: more than 4300 digits
        ("²", None),  # isdigit() is true, int() raises
        ("٣", None),  # int() would read 3
        ("1_000", None),
        (" 7", None),
        ("7 ", None),
        ("+7", None),
        ("-7", None),
        ("", None),
        ("1.0", None),
        (True, None),
        (None, None),
        (1.0, None),
        ([1], None),
    ],
)
def test_as_int_reads_ascii_digits_only(value: Any, expected: int | None) -> None:
    assert as_int(value) == expected


def test_as_int_signs_and_bounds() -> None:
    assert as_int("-7", signed=True) == -7 and as_int("+7", signed=True) == 7
    assert as_int("-", signed=True) is None and as_int("--7", signed=True) is None
    assert as_int(-7) is None and as_int(-7, signed=True) == -7
    assert as_int("5", minimum=6) is None and as_int("6", minimum=6) == 6
    assert as_int("11", maximum=10) is None and as_int("10", maximum=10) == 10
    assert as_int(str(10**20), maximum=None) is None  # still no more than 19 digits


def test_int_field_raises_an_input_error_naming_the_field() -> None:
    assert int_field("12", "burst") == 12
    with pytest.raises(InputError) as info:
        int_field("²", "burst", minimum=1, maximum=250)
    assert info.value.key == "burst" and "from 1 to 250" in info.value.reason and "'²'" in info.value.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Y", True), ("y", True), ("N", False), ("n", False), (True, True), (False, False), ("", None), ("yes", None)],
)
def test_as_flag(value: Any, expected: bool | None) -> None:
    assert as_flag(value) is expected


@pytest.mark.parametrize(
    ("url", "host", "netloc"),
    [
        ("https://Portal.Example.com/rest/", "portal.example.com", "portal.example.com"),
        ("https://portal.example.com:8443/rest/", "portal.example.com", "portal.example.com:8443"),
        ("https://user:pw@portal.example.com/rest/", "portal.example.com", "portal.example.com"),
        ("https://[::1]:8443/rest/", "::1", "[::1]:8443"),
        ("https://[/rest/", None, None),  # urlsplit raises ValueError
        ("https://portal.example.com:99999/", None, None),  # .port raises
        ("https://portal.example.com:x/", None, None),
        ("/rest/", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_host_of_never_raises(url: Any, host: str | None, netloc: str | None) -> None:
    assert host_of(url) == host
    assert netloc_of(url) == netloc
    assert (split_url(url) is None) == (url is None or "[/" in str(url) or ":99999" in str(url) or ":x/" in str(url))


def test_settings_and_connection_urls_that_do_not_split_are_refused_with_the_setting_named() -> None:
    for bad in ("https://[/", "https://robots.example.com:99999"):
        with pytest.raises(ValidationError, match="absolute http"):
            Settings(public_url=bad)
        with pytest.raises(ValidationError, match="not a base URL"):
            Settings(oauth_servers=bad)
        with pytest.raises(ConfigError, match=r"'base_url'.*not an absolute http"):
            check_url(bad, "base_url")  # was a ValueError: a 500 on the admin's connection form
    assert mask_url("postgresql://u:secret@[/db") == "(a URL that does not parse)"
    assert mask_url("postgresql://u:secret@db.example.com/db") == "postgresql://u:****@db.example.com/db"


# --- the requests that were 500s -------------------------------------------------------------------

router = Router()


class In(Params):
    tags = String("Tags", multiple=True)
    attachment = File("File")
    n = Int("N")
    when = DateTime("When")


@router.robot("f.echo", name="Echo", inputs=In)
def echo(inputs: In) -> None: ...


@pytest.fixture
async def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as harness:
        await harness.install()
        yield harness


async def post(h: RobotHarness, path: str, fields: dict[str, Any], query: str = "") -> httpx.Response:
    async with h.client() as client:
        return await client.post(
            path + query, content=encode_form(fields), headers={"content-type": "application/x-www-form-urlencoded"}
        )


def frame(h: RobotHarness, **over: str) -> dict[str, Any]:
    """A UI app's install-page POST (main module app.layout template), with made-up tokens."""
    return {
        "AUTH_ID": "a" * 32,
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "r" * 32,
        "member_id": "f" * 32,
        "status": "L",
        "PLACEMENT": "DEFAULT",
        "DOMAIN": "other.example.test",
        "PROTOCOL": "1",
        "LANG": "en",
    } | over


def event(**auth: str) -> dict[str, Any]:
    base = {
        "access_token": "a" * 32,
        "refresh_token": "r" * 32,
        "expires_in": "3600",
        "domain": "other.example.test",
        "member_id": "f" * 32,
        "application_token": "t" * 32,
        "user_id": "1",
    }
    return {"event": "ONAPPINSTALL", "data": {"LANGUAGE_ID": "en"}, "ts": str(int(time.time())), "auth": base | auth}


@pytest.mark.parametrize(
    "over",
    [
        {"AUTH_EXPIRES": "²"},
        {"AUTH_EXPIRES": "9" * 5000},
        {"SERVER_ENDPOINT": "https://[/rest/"},
        {"SERVER_ENDPOINT": "https://oauth.bitrix.info:99999/rest/"},
        {"DOMAIN": "["},
        {"DOMAIN": "https://[/"},
    ],
    ids=lambda o: next(iter(o)) + "=" + next(iter(o.values()))[:12],
)
async def test_install_frame_with_bad_numbers_or_urls_is_a_4xx(h: RobotHarness, over: dict[str, str]) -> None:
    resp = await post(h, "/b24/install", frame(h, **over))
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["reason"]
    assert len(h.svc.installations.all()) == 1  # nothing new was trusted


async def test_a_server_endpoint_that_does_not_split_is_not_a_trusted_server(h: RobotHarness) -> None:
    resp = await post(h, "/b24/install", frame(h, SERVER_ENDPOINT="https://[/rest/"))
    assert resp.status_code == 400 and "B24R_OAUTH_SERVERS" in resp.json()["reason"]


@pytest.mark.parametrize(
    "auth",
    [{"expires": "²"}, {"expires_in": "²"}, {"user_id": "²"}, {"server_endpoint": "https://[/rest/"}],
    ids=lambda a: next(iter(a)),
)
async def test_install_event_with_bad_numbers_or_urls_is_a_4xx(h: RobotHarness, auth: dict[str, str]) -> None:
    for path in ("/b24/install", "/b24/events"):
        resp = await post(h, path, event(**auth))
        assert 400 <= resp.status_code < 500, (path, resp.text)
        assert resp.json()["reason"]
    assert len(h.svc.installations.all()) == 1


def robot_call(h: RobotHarness, properties: dict[str, Any], **over: Any) -> dict[str, Any]:
    inst = h.svc.installations.get(h.portal.member_id)
    pinst = h.portal.installations[h.app.client_id]
    body: dict[str, Any] = {
        "workflow_id": "681c894d3f0ec8.54818143",
        "code": "f.echo",
        "document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"],
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
        "event_token": f"681c894d3f0ec8.54818143|A1_2_3_4|{time.monotonic_ns()}",
        "properties": properties,
        "use_subscription": "N",
        "timeout_duration": "0",
        "ts": "1746700621",
        "auth": {
            "domain": inst.domain,
            "member_id": inst.member_id,
            "application_token": pinst.application_token,
            "user_id": "1",
        },
    }
    return body | over


async def test_a_list_keyed_by_a_unicode_digit_is_accepted_in_key_order(h: RobotHarness) -> None:
    # properties[tags][²]=x: the keys sort as numbers where they are ASCII numbers, the rest after them
    resp = await post(h, "/b24/robot", robot_call(h, {"tags": {"10": "c", "2": "b", "²": "z", "0": "a"}}))
    assert resp.status_code == 200 and resp.json()["status"] == "queued", resp.text
    await h.until_idle()
    inv = h.svc.journal.get(resp.json()["id"])
    assert inv.inputs is not None and inv.inputs["tags"] == ["a", "b", "c", "z"]


@pytest.mark.parametrize(
    ("properties", "state", "where"),
    [
        ({"attachment": "²"}, "answered", ""),  # a file id that is not a number stays text
        ({"n": "9" * 5000}, "dead", "out of range"),
        ({"n": "1e999999999"}, "dead", "out of range"),  # int() of it would build a billion digits
        ({"n": "٣"}, "dead", "not a number"),
        ({"when": "9" * 20}, "dead", "timestamp"),
        ({"when": "2024-05-27 10:00:00 [99999999999999999999]"}, "dead", "offset"),
    ],
    ids=["file-sup2", "int-5000-digits", "int-1e999999999", "int-arabic-3", "datetime-huge", "datetime-offset"],
)
async def test_robot_call_values_that_raised_are_answered(
    h: RobotHarness, properties: dict[str, str], state: str, where: str
) -> None:
    resp = await post(h, "/b24/robot", robot_call(h, properties))
    assert resp.status_code == 200, resp.text
    await h.until_idle()
    inv = h.svc.journal.get(resp.json()["id"])
    assert inv.state == state, inv.error
    assert where in inv.error


@pytest.mark.parametrize(
    "over",
    [{"timeout_duration": "9" * 30}, {"timeout_duration": "²"}, {"ts": "9" * 12}, {"use_subscription": "n"}],
    ids=["timeout-30-digits", "timeout-sup2", "ts-beyond-int4", "subscription-lower-n"],
)
async def test_robot_call_numbers_beyond_the_columns_are_stored(h: RobotHarness, over: dict[str, str]) -> None:
    resp = await post(h, "/b24/robot", robot_call(h, {"tags": ["a"]}, **over))
    assert resp.status_code == 200 and resp.json()["status"] == "queued", resp.text
    inv = h.svc.journal.get(resp.json()["id"])
    assert inv.timeout_duration == 0 and not inv.use_subscription
