"""Admin UI robots pages over real HTTP: add, validate, save, versions, diff, rollback, sync, test run, adopt."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from b24robots import Double, Params, RobotContext, Router, String, authoring
from b24robots.sandbox import check_source
from b24robots.store.users import Users
from b24robots.testing.app_fixtures import RobotHarness
from tests.ui_helpers import PASSWORD, robot_form, sign_in

router = Router()

GREETING = {"en": "Hello", "ru": "Привет"}


class GreetIn(Params):
    name = String("Name", required=True)
    times = Double("Times", default=1)


class GreetOut(Params):
    text = String("Text")


@router.robot("ui.greet", name="Greet", inputs=GreetIn, outputs=GreetOut)
def greet(inputs: GreetIn, ctx: RobotContext) -> GreetOut:
    ctx.log(f"greeting {inputs.name}")
    return GreetOut(text=f"{GREETING['en']}, {inputs.name}" + "!" * int(inputs.times))


@router.robot("ui.calls_rest", name="Calls REST")
async def calls_rest(ctx: RobotContext) -> None:
    assert ctx.rest is not None
    await ctx.rest.call("crm.deal.get", {"id": 1})


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=True) as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        yield h


@pytest.fixture
async def client(harness: RobotHarness) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with harness.client() as c:
        yield c, await sign_in(c)


async def test_add_a_robot_with_parameters_and_code(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str]
) -> None:
    c, csrf = client
    resp = await c.post("/admin/new-robot", data=robot_form(csrf))
    assert resp.status_code == 303 and resp.headers["location"] == "/admin/robots/ui.total"
    info = harness.svc.register.version("ui.total")
    assert info.number == 1 and info.author == "anna" and info.comment == "first"
    doc = info.document
    assert doc["name"] == {"en": "Order total", "ru": "Сумма заказа"}
    assert doc["properties"]["rate"]["options"] == {"0": "0%", "20": "20%"}
    assert doc["properties"]["rate"]["default"] == "20"
    assert doc["properties"]["amount"]["required"] is True
    assert list(doc["return_properties"]) == ["total"] and doc["use_subscription"] == "Y"
    page = await c.get("/admin/robots/ui.total")
    assert "Saved version 1" in page.text and 'value="amount"' in page.text
    listing = await c.get("/admin/robots")
    row = re.search(r'<tr data-code="ui.total">.*?</tr>', listing.text, re.S)
    assert row and "stored" in row.group(0) and "v1" in row.group(0)


@pytest.mark.parametrize(
    ("overrides", "field_id", "message"),
    [
        ({"code": "Bad Code!"}, "error-code", "robot code 'Bad Code!' is invalid"),
        ({"name": "", "name_ru": ""}, "error-name", "the robot name is empty"),
        ({"in.1.options": ""}, None, "is a select; give options"),
        ({"in.0.key": "Amount-1"}, None, "parameter key 'Amount-1' is invalid"),
        ({"in.1.key": "amount"}, None, "is used twice"),
        ({"in.1.default": "50"}, None, "default does not fit"),
        ({"use_subscription": "N"}, "error-general", "set use_subscription=True"),
    ],
)
async def test_declaration_errors_are_shown_next_to_the_field_and_the_form_keeps_the_input(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str], overrides: dict[str, str], field_id: str | None,
    message: str,
) -> None:  # fmt: skip
    c, csrf = client
    form = robot_form(csrf, **overrides)
    resp = await c.post("/admin/new-robot", data=form)
    assert resp.status_code == 422
    assert message in resp.text.replace("&#39;", "'")
    if field_id:
        assert f'id="{field_id}"' in resp.text
    else:
        assert 'class="row-error"' in resp.text
    assert "Сумма заказа" in resp.text or not form.get("name_ru")
    assert "ctx.log(&#39;rate &#39; + inputs[&#39;rate&#39;])" in resp.text
    assert not harness.svc.register.exists(form["code"])


async def test_code_problems_are_reported_with_their_lines(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str]
) -> None:
    c, csrf = client
    source = "import os\n\ndef run(inputs, ctx):\n    return {'total': 1\n"
    resp = await c.post("/admin/new-robot", data=robot_form(csrf, source=source))
    assert resp.status_code == 422
    problems = re.search(r'<script type="application/json" id="source-problems">(.*?)</script>', resp.text, re.S)
    assert problems and '"line": 4' in problems.group(1)
    assert 'data-line="4"' in resp.text
    lint = await c.post(
        "/admin/actions/check", data={"csrf": csrf, "source": "import os\ndef run(inputs, ctx):\n  return {}\n"}
    )
    assert lint.json()["problems"][0]["line"] == 1 and "os" in lint.json()["problems"][0]["message"]
    ok = await c.post("/admin/actions/check", data={"csrf": csrf, "source": "def run(inputs, ctx):\n  return {}\n"})
    assert ok.json() == {"problems": []}


async def test_versions_diff_and_rollback(harness: RobotHarness, client: tuple[httpx.AsyncClient, str]) -> None:
    c, csrf = client
    await c.post("/admin/new-robot", data=robot_form(csrf))
    await c.post("/admin/actions/sync", data={"csrf": csrf, "next": "/admin/robots"})
    v2_source = robot_form(csrf)["source"].replace("round(", "round(0.5 + ")
    resp = await c.post("/admin/robots/ui.total", data=robot_form(csrf, source=v2_source, comment="half more"))
    assert resp.status_code == 303
    page = await c.get("/admin/robots/ui.total")
    # a change of code alone: no registration needed, and the portal is still in step
    assert "Saved version 2; it is active now. Name, parameters and flags are unchanged" in page.text
    assert "portals in step: 1 of 1" in page.text and "Register it in Bitrix24 to update" not in page.text
    assert f'data-portal="{harness.portal.domain}"' in page.text and "badge ok" in page.text
    same = await c.post("/admin/robots/ui.total", data=robot_form(csrf, source=v2_source, comment="again"))
    assert same.status_code == 303
    assert [v.number for v in harness.svc.register.versions("ui.total")] == [1, 2]
    page = await c.get("/admin/robots/ui.total/versions")
    assert "half more" in page.text and page.text.count('data-version="') == 2
    diff = await c.get("/admin/robots/ui.total/diff", params={"a": 1, "b": 2})
    assert 'id="diff-definition"' not in diff.text  # only the code changed
    rows = re.findall(
        r'<tr class="(\w+)"><td class="no">(\d*)</td><td class="no">(\d*)</td><td class="text">(.*?)</td></tr>',
        diff.text,
    )
    # one row per line (no blank line between them) and the editor's line numbers: the changed line is 3
    assert (
        "del",
        "3",
        "",
        "-    return {&#39;total&#39;: round(inputs[&#39;amount&#39;] * (1 + int(inputs[&#39;rate&#39;]) / 100), 2)}",
    ) in rows
    assert (
        "add",
        "",
        "3",
        "+    return {&#39;total&#39;: round(0.5 + inputs[&#39;amount&#39;] * (1 + int(inputs[&#39;rate&#39;])"
        " / 100), 2)}",
    ) in rows
    assert rows[0] == ("ctx", "1", "1", " def run(inputs, ctx):")
    assert "\n" not in "".join(r[3] for r in rows)
    missing = await c.get("/admin/robots/ui.total/diff", params={"a": 1, "b": 9})
    assert missing.status_code == 404
    ask = await c.post("/admin/robots/ui.total/activate", data={"csrf": csrf, "number": "1"})
    assert ask.status_code == 200 and "Make version 1 of ui.total the one that runs" in ask.text
    assert harness.svc.register.active("ui.total").version == 2  # type: ignore[union-attr]
    back = await c.post("/admin/robots/ui.total/activate", data={"csrf": csrf, "number": "1", "confirmed": "1"})
    assert back.status_code == 303
    active = harness.svc.register.active("ui.total")
    assert active is not None and active.version == 1 and "0.5" not in active.source
    page = await c.get("/admin/robots/ui.total/versions")
    assert "Version 1 of ui.total is active now. Name, parameters and flags are unchanged" in page.text
    # a new output changes the registration: now it must be registered again
    renamed = robot_form(csrf, comment="sum", **{"out.0.name": "Sum"})
    assert (await c.post("/admin/robots/ui.total", data=renamed)).status_code == 303
    page = await c.get("/admin/robots/ui.total")
    assert "Its name, parameters or flags changed: register it in Bitrix24" in page.text
    assert "(in step now: 0 of 1)" in page.text and "changed, not registered" in page.text


async def test_the_code_of_an_existing_robot_cannot_change(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str]
) -> None:
    c, csrf = client
    await c.post("/admin/new-robot", data=robot_form(csrf))
    await c.post("/admin/robots/ui.total", data=robot_form(csrf, code="ui.other", comment="x", name="Renamed"))
    assert not harness.svc.register.exists("ui.other")
    assert harness.svc.register.version("ui.total").document["name"] == {"en": "Renamed", "ru": "Сумма заказа"}
    again = await c.post("/admin/new-robot", data=robot_form(csrf))
    assert again.status_code == 422 and "exists already" in again.text
    module = await c.post("/admin/new-robot", data=robot_form(csrf, code="ui.greet"))
    assert module.status_code == 422 and "Adopt" in module.text


async def test_register_in_bitrix24_and_sync_state(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str]
) -> None:
    c, csrf = client
    await c.post("/admin/new-robot", data=robot_form(csrf))
    listing = await c.get("/admin/robots")
    assert "not registered" in re.search(r'<tr data-code="ui.total">.*?</tr>', listing.text, re.S).group(0)  # type: ignore[union-attr]
    resp = await c.post("/admin/actions/sync", data={"csrf": csrf, "next": "/admin/robots"})
    assert resp.status_code == 303
    listing = await c.get("/admin/robots")
    assert f"{harness.portal.domain}: 1 added, 0 updated, 0 removed" in listing.text
    row = re.search(r'<tr data-code="ui.total">.*?</tr>', listing.text, re.S).group(0)  # type: ignore[union-attr]
    assert "badge ok" in row
    assert any(r.code == "ui.total" for r in harness.portal.registrations.values())
    # a new version with other parameters makes the registration outdated until the next sync
    form = robot_form(csrf, comment="new output", **{"out.1.key": "vat", "out.1.name": "VAT", "out.1.type": "double"})
    await c.post("/admin/robots/ui.total", data=form)
    row = re.search(r'<tr data-code="ui.total">.*?</tr>', (await c.get("/admin/robots")).text, re.S).group(0)  # type: ignore[union-attr]
    assert "changed, not registered" in row
    await c.post("/admin/actions/sync", data={"csrf": csrf})
    reg = next(r for r in harness.portal.registrations.values() if r.code == "ui.total")
    assert "vat" in reg.return_properties
    wf = await harness.run_robot("ui.total", properties={"amount": 100, "rate": "20"})
    assert float(wf.return_values["total"]) == 120.0


async def test_test_run_of_stored_and_module_robots(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str]
) -> None:
    c, csrf = client
    await c.post("/admin/new-robot", data=robot_form(csrf))
    stored = await c.post(
        "/admin/robots/ui.total/test-run", data={"csrf": csrf, "input.amount": "10", "input.rate": "20"}
    )
    assert "Succeeded" in stored.text and "<code>total</code></th><td>12.0" in stored.text
    assert "<li>rate 20</li>" in stored.text
    bad = await c.post("/admin/robots/ui.total/test-run", data={"csrf": csrf, "input.amount": "ten"})
    assert "Failed" in bad.text and "bad input" in bad.text
    module = await c.post(
        "/admin/robots/ui.greet/test-run", data={"csrf": csrf, "input.name": "Ann", "input.times": "2"}
    )
    assert "Hello, Ann!!" in module.text and "greeting Ann" in module.text
    rest = await c.post("/admin/robots/ui.calls_rest/test-run", data={"csrf": csrf})
    assert "Failed" in rest.text and "not available in a test run" in rest.text
    assert not [r for r in harness.sim.calls if r.method == "crm.deal.get"]


async def test_stored_code_calling_rest_in_a_test_run_gets_a_clear_error(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str]
) -> None:
    c, csrf = client
    source = "def run(inputs, ctx):\n    ctx.call('crm.deal.get', {'id': 1})\n    return {}\n"
    await c.post("/admin/new-robot", data=robot_form(csrf, source=source))
    resp = await c.post("/admin/robots/ui.total/test-run", data={"csrf": csrf, "input.amount": "1"})
    assert "Failed" in resp.text and "not available in a test run" in resp.text


async def test_adopting_a_module_robot(harness: RobotHarness, client: tuple[httpx.AsyncClient, str]) -> None:
    c, csrf = client
    page = await c.get("/admin/robots/ui.greet")
    assert "Adopt into the register" in page.text and "def greet" in page.text
    resp = await c.post("/admin/robots/ui.greet/adopt", data={"csrf": csrf})
    assert resp.status_code == 303
    info = harness.svc.register.version("ui.greet")
    assert 'inputs["name"]' in info.source or "inputs['name']" in info.source
    assert harness.svc.register.robots()[0].origin == "adopted"
    wf = await harness.run_robot("ui.greet", properties={"name": "Bo", "times": 3})
    assert wf.return_values["text"] == "Hello, Bo!!!"
    journal = harness.svc.journal.recent(robot="ui.greet")
    assert journal[0].origin == "stored"


async def test_a_robot_that_cannot_be_converted_opens_a_template(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str]
) -> None:
    c, csrf = client
    resp = await c.post("/admin/robots/ui.calls_rest/adopt", data={"csrf": csrf})
    assert resp.status_code == 200 and "Converted only in part" in resp.text
    assert "only plain (not async) handler functions can be converted" in resp.text
    assert not harness.svc.register.exists("ui.calls_rest")


def test_adoption_copies_constants_and_allowed_imports() -> None:
    robot = router.get("ui.greet")
    assert robot is not None
    adoption = authoring.adopt_source(robot)
    assert adoption.converted, adoption.note
    assert "GREETING = {" in adoption.source and "def run(inputs, ctx):" in adoption.source
    assert check_source(adoption.source) == []


async def test_unknown_robot_pages_are_404(client: tuple[httpx.AsyncClient, str]) -> None:
    c, csrf = client
    assert (await c.get("/admin/robots/no.such")).status_code == 404
    assert (await c.get("/admin/robots/no.such/versions")).status_code == 404
    assert (await c.post("/admin/robots/no.such", data={"csrf": csrf})).status_code == 404
    assert (await c.post("/admin/robots/no.such/test-run", data={"csrf": csrf})).status_code == 404
