"""Never a 500: every field each public endpoint reads, drawn with hostile values.

The key sets are taken from the code that reads them (`read_keys` walks the portal modules' ASTs for
the literal keys passed to `_str`, `_text` and `.get`; the API's from its pydantic models), so a field
added there is fuzzed here without anyone listing it. Values mix what broke before (unicode digits,
5000-digit and 1e999999999 numbers, `[` and `https://[/` URLs, NUL, empty, nested `[..][..]` maps).
Every bug found by these tests is kept as an `@example`. With `CI` set, the `ci` Hypothesis profile
(tests/conftest.py) makes the runs deterministic and bounded.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import b24robots
from b24robots import Bool, Date, DateTime, Double, File, Int, Params, Router, Select, String, User
from b24robots.inbound.formcodec import encode_form
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.web.api import FireRequest, WorkflowStartRequest

SRC = Path(b24robots.__file__).parent


def read_keys(*modules: str) -> frozenset[str]:
    """The string keys the code reads from request fields: `_str(x, "k")`, `_text(x, "k")`, `x.get("k")`."""
    keys: set[str] = set()
    for module in modules:
        tree = ast.parse((SRC / module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("_str", "_text") and len(node.args) >= 2:
                arg = node.args[1]
            elif isinstance(func, ast.Attribute) and func.attr == "get" and node.args:
                arg = node.args[0]
            else:
                continue
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                keys.add(arg.value)
    return frozenset(keys)


# portal/grant.py (frame POST, app events), portal/auth.py (auth blocks), portal/install.py (the flow)
INSTALL_KEYS = read_keys("portal/grant.py", "portal/auth.py", "portal/install.py")
# portal/robot_call.py: the robot call as bizproc lib/restactivity.php::execute sends it, and its auth block
ROBOT_KEYS = read_keys("portal/robot_call.py", "portal/auth.py")
# what the query string of a frame POST adds (main module app.layout template: DOMAIN, PROTOCOL, LANG, APP_SID)
QUERY_KEYS = ("DOMAIN", "PROTOCOL", "LANG", "APP_SID")


def test_the_key_sets_are_the_code_s() -> None:
    # the extraction works: the fields the install page, the events and the robot call are known to read
    assert {"AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "member_id", "DOMAIN", "SERVER_ENDPOINT", "event"} <= INSTALL_KEYS
    assert {"expires", "expires_in", "user_id", "application_token", "LANGUAGE_ID", "CLEAN"} <= INSTALL_KEYS
    assert {"code", "event_token", "workflow_id", "use_subscription", "timeout_duration", "ts"} <= ROBOT_KEYS
    assert {"document_id", "document_type", "properties", "auth", "user_id", "expires"} <= ROBOT_KEYS


router = Router()


class Everything(Params):
    text = String("Text")
    tags = String("Tags", multiple=True)
    n = Int("N")
    ns = Int("Ns", multiple=True)
    x = Double("X")
    yes = Bool("Yes")
    day = Date("Day")
    when = DateTime("When")
    pick = Select("Pick", options={"a": "A", "b": "B"})
    who = User("Who")
    file = File("File")


@router.robot("z.all", name="Every type", inputs=Everything)
def every_type(inputs: Everything) -> None: ...


PROPERTY_KEYS = tuple(p.key for p in Everything.params())

NASTY = st.sampled_from(
    [
        "",
        "²",
        "٣",
        "١٢",
        "1_000",
        " 7",
        "-1",
        "+1",
        "0",
        "007",
        "9" * 20,
        "9" * 30,
        "9" * 5000,
        "1e999999999",
        "-1e999999999",
        "nan",
        "inf",
        "[",
        "]",
        "[]",
        "https://[/rest/",
        "https://[::1]:99999/rest/",
        "http://example.com:x/",
        "//evil.example.com/",
        "Y",
        "n",
        "a\x00b",
        "DEAL_²",
        "DYNAMIC_٣_1",
        "2024-05-27 10:00:00 [99999999999999999999]",
        "user_²",
        "Anna [٣]",
    ]
)
VALUE = NASTY | st.text(max_size=12)
INDEX = st.sampled_from(["0", "1", "2", "10", "²", "٣", "-1", "9" * 30, "x", "[", "0x1", "a[b"])
# a nested form key is non-empty without "]" (formcodec.encode_form; `a[]=` is PHP's push, drawn as a list)
KEY = INDEX | VALUE.filter(lambda k: bool(k) and "]" not in k)
NESTED = st.recursive(
    VALUE,
    lambda inner: st.dictionaries(KEY, inner, max_size=3) | st.lists(inner, max_size=3),
    max_leaves=6,
)


def fields(keys: frozenset[str] | tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(sorted(keys)), NESTED, max_size=8)


@pytest.fixture
async def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as harness:
        await harness.install()
        yield harness


async def post_form(h: RobotHarness, path: str, body: bytes) -> tuple[int, str]:
    async with h.client() as client:
        resp = await client.post(path, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    return resp.status_code, resp.text


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(path=st.sampled_from(["/b24/install", "/b24/events"]), body=fields(INSTALL_KEYS), query=fields(QUERY_KEYS))
@example(
    path="/b24/install",
    body={"AUTH_ID": "a", "REFRESH_ID": "r", "member_id": "m", "AUTH_EXPIRES": "²"},
    query={"DOMAIN": "portal.example.com"},
)
@example(path="/b24/install", body={"AUTH_ID": "a", "REFRESH_ID": "r", "member_id": "m"}, query={"DOMAIN": "["})
@example(
    path="/b24/install",
    body={"AUTH_ID": "a", "REFRESH_ID": "r", "member_id": "m", "SERVER_ENDPOINT": "https://[/rest/"},
    query={"DOMAIN": "portal.example.com"},
)
@example(
    path="/b24/events",
    body={
        "event": "ONAPPINSTALL",
        "auth": {"access_token": "a", "refresh_token": "r", "member_id": "m", "domain": "d.example.com"}
        | {"application_token": "t", "expires": "²", "expires_in": "²", "user_id": "²"},
    },
    query={},
)
async def test_install_and_events_never_500(
    h: RobotHarness, path: str, body: dict[str, Any], query: dict[str, Any]
) -> None:
    raw = encode_form(body)
    qs = encode_form(query).decode()
    status, text = await post_form(h, f"{path}?{qs}" if qs else path, raw)
    assert status in (200, 400, 401, 403, 502, 503), text
    if status >= 400:
        assert json.loads(text)["reason"]
    assert len(h.svc.installations.all()) == 1  # nothing new was trusted


def robot_body(h: RobotHarness, over: dict[str, Any], auth_over: dict[str, Any], props: dict[str, Any]) -> bytes:
    inst = h.svc.installations.get(h.portal.member_id)
    pinst = h.portal.installations[h.app.client_id]
    auth = {"domain": inst.domain, "member_id": inst.member_id, "application_token": pinst.application_token}
    body: dict[str, Any] = {
        "workflow_id": "681c894d3f0ec8.54818143",
        "code": "z.all",
        "document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"],
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
        "event_token": "681c894d3f0ec8.54818143|A1_2_3_4|abc.def",
        "properties": props,
        "use_subscription": "N",
        "timeout_duration": "0",
        "ts": "1746700621",
        "auth": auth | auth_over,
    }
    return encode_form(body | over)


@FUZZ
@given(
    over=fields(ROBOT_KEYS - {"auth", "properties", "code"}),
    auth_over=fields(ROBOT_KEYS - {"domain", "member_id", "application_token"}),
    props=fields(PROPERTY_KEYS),
    token=st.text(min_size=1, max_size=20),
)
@example(over={}, auth_over={}, props={"tags": {"²": "x", "1": "y"}}, token="sup2")
@example(over={"timeout_duration": "9" * 30}, auth_over={}, props={}, token="wide-timeout")
@example(over={"ts": "²", "use_subscription": "n"}, auth_over={"user_id": "²"}, props={}, token="ts")
@example(over={}, auth_over={}, props={"n": "9" * 5000, "file": "²", "when": "9" * 20}, token="numbers")
@example(over={}, auth_over={}, props={"n": "1e999999999"}, token="billion-digits")
@example(over={}, auth_over={}, props={"when": "2024-05-27 10:00:00 [99999999999999999999]"}, token="offset")
@example(over={"document_id": ["tasks", "x", "²"]}, auth_over={}, props={}, token="document")
async def test_authenticated_robot_calls_never_500(
    h: RobotHarness, over: dict[str, Any], auth_over: dict[str, Any], props: dict[str, Any], token: str
) -> None:
    raw = robot_body(h, over | ({"event_token": token} if "event_token" not in over else {}), auth_over, props)
    status, text = await post_form(h, "/b24/robot", raw)
    # 401/403 when a drawn auth field (user_id, access_token, ...) makes the call someone else's
    assert status in (200, 400, 401, 403), text
    if status != 200:
        assert json.loads(text)["reason"]


@FUZZ
@given(raw=st.binary(max_size=400) | st.text(max_size=300).map(str.encode))
async def test_random_robot_bodies_never_500(h: RobotHarness, raw: bytes) -> None:
    status, text = await post_form(h, "/b24/robot", raw)
    assert status in (200, 400, 401, 403), text


API_KEYS = sorted(set(FireRequest.model_fields) | set(WorkflowStartRequest.model_fields))
JSON_VALUE = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | VALUE
    | st.lists(VALUE, max_size=2)
)
JSON_NESTED = st.recursive(JSON_VALUE, lambda inner: st.dictionaries(VALUE, inner, max_size=3), max_leaves=5)


@FUZZ
@given(
    target=st.sampled_from(["fire", "start", "status"]),
    path_part=VALUE | st.integers().map(str),
    body=st.dictionaries(st.sampled_from(API_KEYS), JSON_NESTED, max_size=5),
    idem=st.none() | VALUE,
)
@example(target="status", path_part="9" * 30, body={}, idem=None)
@example(target="start", path_part="", body={"template_id": 10**30, "entity": "DEAL_1"}, idem=None)
@example(target="fire", path_part="t.note", body={"entity_type_id": 10**30, "entity_id": 10**30}, idem=None)
async def test_api_never_500(
    h: RobotHarness, target: str, path_part: str, body: dict[str, Any], idem: str | None
) -> None:
    inst = h.svc.installations.get(h.portal.member_id)
    if not hasattr(h, "api_secret"):
        _key, secret = h.svc.apikeys.create("fuzz", inst.id, triggers=["*"], templates=["*"])
        h.api_secret = secret  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {h.api_secret}"}  # type: ignore[attr-defined]
    if idem is not None:
        headers["Idempotency-Key"] = idem.encode("ascii", "replace").decode()
    part = quote(path_part, safe="") or "x"
    async with h.client() as client:
        if target == "status":
            resp = await client.get(f"/api/v1/fires/{part}", headers=headers)
        elif target == "fire":
            resp = await client.post(f"/api/v1/triggers/{part}/fire", json=body, headers=headers)
        else:
            resp = await client.post("/api/v1/workflows/start", json=body, headers=headers)
    assert resp.status_code < 500 or resp.status_code == 502, resp.text
