"""The admin UI in Debian chromium: sign in, add a robot, see a validation error, register it in the
simulated portal, run it from the simulator page, watch the journal update live, test-run, roll back."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.ui.conftest import Live, shot
from tests.ui_helpers import PASSWORD

pytestmark = pytest.mark.browser

BROKEN = "def run(inputs, ctx):\n    total = inputs['amount'] *\n    return {'total': total}\n"
GOOD = (
    "def run(inputs, ctx):\n"
    "    total = round(inputs['amount'] * (1 + int(inputs['vat']) / 100), 2)\n"
    '    ctx.log(f"total {total}")\n'
    "    return {'total': total}\n"
)


def sign_in(page: Any, live: Live) -> None:
    page.goto(f"{live.url}/admin/robots")
    assert "/admin/login" in page.url
    page.get_by_label("User name").fill("anna")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live.url}/admin/robots")


def set_code(page: Any, source: str) -> None:
    page.wait_for_function("window.b24rEditor !== undefined")
    page.evaluate("source => window.b24rEditor.setValue(source)", source)


def test_sign_in_refuses_a_wrong_password(page: Any, live: Live) -> None:
    page.goto(f"{live.url}/admin/login")
    page.get_by_label("User name").fill("anna")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    assert page.locator("#login-error").inner_text() == "Wrong user name or password."


def test_add_register_run_and_roll_back(page: Any, live: Live) -> None:
    sign_in(page, live)
    shot_robots_later = page.locator("#robots-table")
    assert shot_robots_later.locator("tr[data-code='demo.quote']").count() == 1

    # add a robot with parameters and code; the first save fails on the code
    page.get_by_role("link", name="Add a robot").click()
    page.get_by_label("Code", exact=True).first.fill("shop.vat_total")
    page.locator("#name").fill("VAT total")
    page.get_by_label("Name in Russian").first.fill("Сумма с НДС")
    inputs = page.locator("#params-in")
    page.locator("[data-add-row='in']").click()
    inputs.locator("input[name='in.0.key']").fill("amount")
    inputs.locator("input[name='in.0.name']").fill("Amount")
    inputs.locator("select[name='in.0.type']").select_option("double")
    inputs.locator("input[name='in.0.required']").check()
    page.locator("[data-add-row='in']").click()
    inputs.locator("input[name='in.1.key']").fill("vat")
    inputs.locator("input[name='in.1.name']").fill("VAT rate")
    inputs.locator("select[name='in.1.type']").select_option("select")
    inputs.locator("input[name='in.1.options']").fill("10=10%; 20=20%")
    inputs.locator("input[name='in.1.default']").fill("20")
    page.locator("[data-add-row='out']").click()
    page.locator("input[name='out.0.key']").fill("total")
    page.locator("input[name='out.0.name']").fill("Total")
    page.locator("select[name='out.0.type']").select_option("double")
    # a row added by mistake and removed again
    page.locator("[data-add-row='out']").click()
    page.locator("input[name='out.1.key']").fill("oops")
    page.locator("#params-out tr[data-row]").nth(1).locator("[data-remove-row]").click()
    set_code(page, BROKEN)
    page.locator("#save-button").click()
    page.wait_for_selector("#problems li")
    assert "line 2" in page.locator("#problems").inner_text()
    assert page.locator(".cm-problem-marker").count() >= 1  # the marker sits at the line in the editor
    assert page.locator("#name").input_value() == "VAT total"  # what was typed is kept
    assert page.locator("input[name='in.1.options']").input_value() == "10=10%; 20=20%"
    assert page.locator("input[name='out.1.key']").count() == 0
    set_code(page, GOOD)
    page.wait_for_function("document.querySelectorAll('#problems li').length === 0")  # live check clears it
    page.locator("#comment").fill("first version")
    page.locator("#save-button").click()
    page.wait_for_url(f"{live.url}/admin/robots/shop.vat_total")
    assert "Saved version 1" in page.locator(".flash.success").inner_text()

    # test run from the UI
    page.locator("#ti-amount").fill("100")
    page.locator("#test-form button[type=submit]").click()
    page.wait_for_selector("#test-outcome")
    assert (
        "110.0" in page.locator("#test-outputs").inner_text() or "120.0" in page.locator("#test-outputs").inner_text()
    )
    assert "total 1" in page.locator("#test-log").inner_text()
    shot(page, "robot-editor")

    # register in Bitrix24 (the simulated portal)
    page.get_by_role("button", name="Register in Bitrix24").first.click()
    page.wait_for_url(f"{live.url}/admin/robots/shop.vat_total")
    assert "1 added" in page.locator(".flash.success").inner_text()
    assert any(r.code == "shop.vat_total" for r in live.portal.registrations.values())
    page.goto(f"{live.url}/admin/robots")
    row = page.locator("tr[data-code='shop.vat_total']")
    assert "registered" in row.locator(".sync").inner_text()
    shot(page, "robots")

    # keep the journal open, run the robot from the simulator page in another tab, watch the row appear
    page.goto(f"{live.url}/admin/journal")
    sim_page = page.context.new_page()
    sim_page.goto(f"{live.sim_url}/sim/")
    sim_page.locator("select[name=robot]").select_option(f"{live.portal.domain}|shop.vat_total")
    sim_page.locator("input[name=document_id]").fill("DEAL_2")
    sim_page.locator("textarea[name=properties]").fill('{"amount": 250, "vat": "10"}')
    sim_page.get_by_role("button", name="Start").click()
    sim_page.wait_for_url(re.compile(r".*/sim/\?message=.*"))
    row = page.locator("#journal-rows tr[data-state='delivered']").first
    row.wait_for(timeout=15_000)  # no reload: htmx polls every 2 s
    assert "shop.vat_total" in row.inner_text() and "DEAL_2" in row.inner_text()
    wf = next(w for w in live.sim.workflows(live.portal) if w.code == "shop.vat_total")
    assert float(wf.return_values["total"]) == 275.0
    shot(page, "journal")
    row.locator("a").first.click()
    page.wait_for_selector("#outputs")
    assert "275.0" in page.locator("#outputs").inner_text()
    assert "total 275.0" in page.locator("#log").inner_text()
    shot(page, "journal-detail")

    # a second version, the diff, and a rollback to version 1
    page.goto(f"{live.url}/admin/robots/shop.vat_total")
    set_code(page, GOOD.replace("round(", "1 + round("))
    page.locator("#comment").fill("plus one")
    page.locator("#save-button").click()
    page.wait_for_selector("text=Saved version 2")
    page.get_by_role("link", name="Versions").click()
    page.get_by_role("button", name="Show the difference").click()
    assert "+    total = 1 + round(" in page.locator("#diff-code").inner_text()
    shot(page, "diff")
    page.go_back()
    page.get_by_role("button", name="Activate version 1").click()
    assert "Make version 1 of shop.vat_total the one that runs" in page.locator("#confirm").inner_text()
    page.locator("#confirm-yes").click()
    page.wait_for_selector("text=Version 1 of shop.vat_total is active now")
    assert "active" in page.locator("tr[data-version='1']").inner_text()
    active = live.svc.register.active("shop.vat_total")
    assert active is not None and active.version == 1

    # portals
    page.get_by_role("link", name="Portals").click()
    assert live.portal.domain in page.locator("#portals-table").inner_text()
    assert "valid until" in page.locator("#portals-table").inner_text()
    shot(page, "portals")


def test_russian_interface(page: Any, live: Live) -> None:
    sign_in(page, live)
    page.get_by_role("link", name="Русский").click()
    page.wait_for_selector("text=Зарегистрировать в Битрикс24")
    assert page.locator("html").get_attribute("lang") == "ru"
    assert "Роботы" in page.locator("nav").inner_text()


def test_pages_run_under_the_strict_content_security_policy(chrome: Any, live: Live) -> None:
    context = chrome.new_context()  # no CSP bypass here: what users get
    pg = context.new_page()
    violations: list[str] = []
    pg.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        sign_in(pg, live)
        pg.goto(f"{live.url}/admin/new-robot")
        pg.wait_for_selector(".CodeMirror")  # the editor started: our script and CodeMirror loaded
        pg.goto(f"{live.url}/admin/robots/demo.quote")
        pg.locator("#ti-amount").fill("3")
        pg.locator("#test-form button[type=submit]").click()  # htmx request with the CSRF header
        pg.wait_for_selector("#test-outcome")
        assert "Offer: 3.00" in pg.locator("#test-outputs").inner_text()
    finally:
        context.close()
    assert violations == []
