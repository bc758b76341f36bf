"""Connections in Debian chromium, in English and in Russian: add an http connection (a local server) and a
1c one (the fake 1C), press Test and see it work, write a stored robot that uses both, test-run it from the
robot editor; the secrets never appear in any page the browser got."""

from __future__ import annotations

from typing import Any

import pytest

from b24robots.testing import FakeOneCServer
from tests.connections.support import SECRET, echo_server
from tests.ui.conftest import Live, shot
from tests.ui.test_browser import set_code, sign_in

pytestmark = pytest.mark.browser

ONEC_SECRET = "1c-Pa55-word-Only-Here"
INN = "7701234567"
ROBOT = """
def run(inputs, ctx):
    found = ctx.onec(inputs["buh"]).first("Catalog_Контрагенты", filter={"ИНН": inputs["inn"]})
    answer = ctx.http(inputs["erp"]).get("api/quiet", params={"inn": inputs["inn"]})
    ctx.log(f"erp answered {answer.status}")
    return {"name": found["Description"] if found else "", "seen": answer.json()["q"]["inn"]}
"""
TEXT = {
    "en": {
        "saved": "Connection {name} saved.",
        "works": "{name} works: ",
        "test": "Test",
        "version": "Saved version 1",
    },
    "ru": {
        "saved": "Подключение {name} сохранено.",
        "works": "{name} работает: ",
        "test": "Проверить",
        "version": "Сохранена версия 1",
    },
}


class Pages:
    """Every page the browser showed, kept to look for the secrets in at the end."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.html: list[str] = []

    def keep(self) -> None:
        self.html.append(self.page.content())


def add_connection(page: Any, pages: Pages, live: Live, kind: str, name: str, fields: dict[str, str]) -> None:
    page.goto(f"{live.url}/admin/connections")
    page.locator(f"a[href='/admin/connections/new?kind={kind}']").click()
    form = page.locator("#connection-form")
    form.locator("input[name=name]").fill(name)
    for field, value in fields.items():
        target = form.locator(f"[name='{field}']")
        if target.evaluate("el => el.tagName") == "SELECT":
            target.select_option(value)
        else:
            target.fill(value)
    pages.keep()
    form.locator("button[type=submit]").click()
    page.wait_for_url(f"{live.url}/admin/connections")
    pages.keep()


def press_test(page: Any, pages: Pages, lang: str, name: str) -> str:
    row = page.locator(f"#connections-table tr[data-name='{name}'][data-member='']")
    row.get_by_role("button", name=TEXT[lang]["test"], exact=True).click()
    page.wait_for_selector(".flash")
    pages.keep()
    flash = page.locator(".flash").first.inner_text()
    assert TEXT[lang]["works"].format(name=name) in flash, flash
    return flash


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_add_test_and_use_connections_from_the_robot_editor(
    page: Any, live: Live, b24_onec: FakeOneCServer, lang: str
) -> None:
    erp, buh, code = f"erp-{lang}", f"buh-{lang}", f"conn.lookup_{lang}"
    b24_onec.fake.password = ONEC_SECRET
    b24_onec.fake.add("Catalog_Контрагенты", Description="ООО Ромашка", ИНН=INN)
    pages = Pages(page)
    sign_in(page, live)
    if lang == "ru":
        page.get_by_role("link", name="Русский").click()
        page.wait_for_selector("html[lang=ru]")
    with echo_server() as (server, state):
        # an HTTP API with a bearer token, and a 1C infobase with basic auth; both saved, both tested
        add_connection(
            page, pages, live, "http", erp,
            {"set.base_url": server.origin + "/", "set.auth": "bearer", "secret.token": SECRET},
        )  # fmt: skip
        assert TEXT[lang]["saved"].format(name=erp) in page.locator(".flash.success").inner_text()
        add_connection(
            page, pages, live, "1c", buh,
            {"set.base_url": b24_onec.base_url, "set.username": b24_onec.fake.username, "secret.password": ONEC_SECRET},
        )  # fmt: skip
        table = page.locator("#connections-table").inner_text()
        assert erp in table and buh in table and "token=********" in table and "password=********" in table
        assert "the base URL answered 200" in press_test(page, pages, lang, erp)
        assert "$metadata answered with 1 entity set(s)" in press_test(page, pages, lang, buh)
        if lang == "en":
            shot(page, "connections")
        # the edit page says a secret is set, never what it is
        page.goto(f"{live.url}/admin/connections/{erp}")
        assert page.locator("input[name='secret.token']").get_attribute("placeholder") == "********"
        assert page.locator("input[name='secret.token']").input_value() == ""
        pages.keep()

        # a stored robot that declares both and uses them; the test run in the editor reaches them
        page.goto(f"{live.url}/admin/new-robot")
        page.locator("#code").fill(code)
        page.locator("#name").fill(f"Counterparty lookup {lang}")
        page.locator("#connections").fill(f"{erp}, {buh}")
        for n, key in enumerate(("inn", "erp", "buh")):
            page.locator("[data-add-row='in']").click()
            page.locator(f"input[name='in.{n}.key']").fill(key)
            page.locator(f"input[name='in.{n}.name']").fill(key.upper())
        for n, key in enumerate(("name", "seen")):
            page.locator("[data-add-row='out']").click()
            page.locator(f"input[name='out.{n}.key']").fill(key)
            page.locator(f"input[name='out.{n}.name']").fill(key.title())
        set_code(page, ROBOT)
        page.locator("#save-button").click()
        page.wait_for_url(f"{live.url}/admin/robots/{code}")
        assert TEXT[lang]["version"] in page.locator(".flash.success").inner_text()
        pages.keep()
        page.locator("#ti-inn").fill(INN)
        page.locator("#ti-erp").fill(erp)
        page.locator("#ti-buh").fill(buh)
        page.locator("#test-form button[type=submit]").click()
        page.wait_for_selector("#test-outcome")
        pages.keep()
        outputs = page.locator("#test-outputs").inner_text()
        assert "ООО Ромашка" in outputs and INN in outputs, page.locator("#test-outcome").inner_text()
        calls = page.locator("#test-calls").inner_text()
        assert buh in calls and erp in calls and "/api/quiet" in calls and "200" in calls
        assert "erp answered 200" in page.locator("#test-log").inner_text()
        if lang == "en":
            shot(page, "robot-connections-test-run")
        # the server added the credentials on its side of the wall
        assert state.seen[-1]["headers"]["authorization"] == f"Bearer {SECRET}"
        assert b24_onec.fake.seen[-1].user == b24_onec.fake.username

    for path in ("/admin/connections", f"/admin/connections/{buh}", f"/admin/robots/{code}", "/admin/audit"):
        page.goto(f"{live.url}{path}")
        pages.keep()
    assert len(pages.html) >= 12
    for html in pages.html:
        assert SECRET not in html and ONEC_SECRET not in html
