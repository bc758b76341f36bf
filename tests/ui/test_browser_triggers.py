"""The Triggers and API keys pages in Debian chromium: fire a trigger from the UI, see it delivered on
the simulated portal exactly once; create a key (shown once), use it, revoke it; the Russian page."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.ui.conftest import Live, shot
from tests.ui.test_browser import sign_in

pytestmark = pytest.mark.browser


def test_fire_a_trigger_from_the_ui(page: Any, live: Live) -> None:
    deal_id = int(live.portal.add_deal(STAGE_ID="NEW")["ID"])
    from b24robots.testing import automation

    automation.add_rule(live.sim, "demo.paid", portal=live.portal, stage="WON")
    sign_in(page, live)
    page.get_by_role("link", name="Triggers").click()
    page.wait_for_url(f"{live.url}/admin/triggers")
    row = page.locator("#triggers-table tr[data-code='demo.paid']")
    assert "registered" in row.inner_text()
    page.get_by_label("Entity").first.fill("DEAL_4040")
    page.get_by_role("button", name="Fire", exact=True).click()
    assert "does not exist" in page.locator("#fire-error").inner_text()
    page.get_by_label("Entity").first.fill(f"DEAL_{deal_id}")
    page.get_by_label("Idempotency key (optional)").fill("ui-1")
    page.get_by_role("button", name="Fire", exact=True).click()
    page.wait_for_url(f"{live.url}/admin/triggers")
    assert "Trigger demo.paid fired" in page.locator(".flash.success").inner_text()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page.reload()
        if page.locator("#fires-table tr[data-status='delivered']").count() == 1:
            break
        time.sleep(0.3)
    assert page.locator("#fires-table tr[data-status='delivered']").count() == 1
    assert page.locator("#fires-table tr[data-status='delivered'] td").nth(4).inner_text() == "admin UI"
    shot(page, "triggers")
    page.locator("#fires-table tr[data-status='delivered'] a").first.click()
    page.wait_for_selector("text=crm.automation.trigger.execute")  # the journal entry holds the call
    page.goto(f"{live.url}/admin/triggers")
    # the same key again: stored once, not fired again
    page.get_by_label("Entity").first.fill(f"DEAL_{deal_id}")
    page.get_by_label("Idempotency key (optional)").fill("ui-1")
    page.get_by_role("button", name="Fire", exact=True).click()
    assert "not fired again" in page.locator(".flash.warning").inner_text()
    assert [(f.code, f.owner_id) for f in live.portal.trigger_firings] == [("demo.paid", deal_id)]
    assert live.portal.deals[deal_id]["STAGE_ID"] == "WON"


def test_create_use_and_revoke_an_api_key(page: Any, live: Live) -> None:
    deal_id = int(live.portal.add_deal()["ID"])
    sign_in(page, live)
    page.goto(f"{live.url}/admin/api-keys")
    page.get_by_label("Who uses it").fill("1C accounting")
    page.locator("#key-form input[value='demo.paid']").check()
    page.get_by_role("button", name="Create the key").click()
    secret = page.locator("#new-key-value").inner_text().strip()
    assert secret.startswith("b24r_")
    shot(page, "api-keys")
    page.goto(f"{live.url}/admin/api-keys")
    assert secret not in page.content()  # shown once only
    hdr = {"Authorization": f"Bearer {secret}"}
    ok = httpx.post(f"{live.url}/api/v1/triggers/demo.paid/fire", json={"entity": f"DEAL_{deal_id}"}, headers=hdr)
    assert ok.status_code == 202, ok.text
    page.reload()
    row = page.locator("#keys-table tr", has_text="1C accounting")
    assert "—" not in row.locator("td").nth(5).inner_text()  # last used is set
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_selector("text=API key 1C accounting is revoked.")
    refused = httpx.post(f"{live.url}/api/v1/triggers/demo.paid/fire", json={"entity": f"DEAL_{deal_id}"}, headers=hdr)
    assert refused.status_code == 401


def test_the_pages_speak_russian(page: Any, live: Live) -> None:
    sign_in(page, live)
    page.goto(f"{live.url}/admin/lang/ru?next=/admin/triggers")
    page.wait_for_selector("text=Запустить триггер")
    page.goto(f"{live.url}/admin/api-keys")
    page.wait_for_selector("text=Создать ключ")
    page.goto(f"{live.url}/admin/lang/en?next=/admin/robots")


def _add_sync_and_fire(page: Any, live: Live, code: str, *, ru: bool) -> None:
    """Add a register trigger with the Add form, Re-sync the portal, fire it with the Fire form."""
    t = (lambda en, r: r) if ru else (lambda en, r: en)
    deal_id = int(live.portal.add_deal(STAGE_ID="NEW")["ID"])
    from b24robots.testing import automation

    automation.add_rule(live.sim, code, portal=live.portal, stage="WON")
    page.goto(f"{live.url}/admin/triggers")
    form = page.locator("#add-form")
    form.get_by_label(t("Code", "Код")).fill(code)
    form.get_by_label(t("Name (English)", "Название (английское)")).fill("Shipped from the warehouse")
    form.get_by_label(t("Name (Russian)", "Название (русское)")).fill("Отгружено со склада")
    form.get_by_role("button", name=t("Add", "Добавить"), exact=True).click()
    page.wait_for_url(f"{live.url}/admin/triggers")
    assert code in page.locator(".flash.success").inner_text()
    row = page.locator(f"#triggers-table tr[data-code='{code}']")
    assert row.locator("td.source").inner_text() == t("register", "реестр")
    assert t("not registered yet", "ещё не зарегистрирован") in row.inner_text()
    page.goto(f"{live.url}/admin/portals")
    page.get_by_role("button", name=t("Re-sync", "Синхронизировать")).first.click()
    page.wait_for_load_state()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and code not in {c for _app, c in live.portal.triggers}:
        time.sleep(0.2)
    assert code in {c for _app, c in live.portal.triggers}  # crm.automation.trigger.add reached the portal
    page.goto(f"{live.url}/admin/triggers")
    row = page.locator(f"#triggers-table tr[data-code='{code}']")
    assert row.locator("td[data-state='registered']").count() == 1, row.inner_text()
    shot(page, "triggers-register-ru" if ru else "triggers-register")
    fire = page.locator("#fire-form")
    fire.get_by_label(t("Trigger", "Триггер")).select_option(code)
    fire.get_by_label(t("Entity", "Объект")).fill(f"DEAL_{deal_id}")
    fire.get_by_role("button", name=t("Fire", "Запустить"), exact=True).click()
    page.wait_for_url(f"{live.url}/admin/triggers")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and live.portal.deals[deal_id]["STAGE_ID"] != "WON":
        time.sleep(0.2)
    assert [f.owner_id for f in live.portal.trigger_firings if f.code == code] == [deal_id]
    assert live.portal.deals[deal_id]["STAGE_ID"] == "WON"


def test_add_a_trigger_in_the_ui_sync_and_fire_it(page: Any, live: Live) -> None:
    sign_in(page, live)
    _add_sync_and_fire(page, live, "ui.shipped", ru=False)


def test_add_a_trigger_in_the_russian_ui_sync_and_fire_it(page: Any, live: Live) -> None:
    sign_in(page, live)
    page.goto(f"{live.url}/admin/lang/ru?next=/admin/triggers")
    page.wait_for_selector("text=Добавить триггер")
    try:
        _add_sync_and_fire(page, live, "ui.otgruzka", ru=True)
    finally:
        page.goto(f"{live.url}/admin/lang/en?next=/admin/robots")
