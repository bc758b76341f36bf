"""Taking robots off portals in Debian chromium, in English and Russian: a stored robot's Disable and
Delete ask on a page of their own before anything changes, and a portal's Re-sync that would delete
a registration lists it and asks (delete, sync without deleting, or cancel)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from b24robots import Router
from b24robots.robots.spec import RobotSpec
from tests.ui.conftest import Live, router, shot
from tests.ui.test_browser import sign_in

pytestmark = pytest.mark.browser

TEXT = {
    "en": {"disable": "Disable {code}?", "delete": "Delete {code}?", "resync": "would delete 1 registration"},
    "ru": {"disable": "Отключить {code}?", "delete": "Удалить {code}?", "resync": "удалит регистраций"},
}


def registered(live: Live) -> set[str]:
    return {r.code for r in live.portal.registrations.values()}


def until(check: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_disable_and_delete_ask_first(page: Any, live: Live, lang: str) -> None:
    code = f"ui.off_{lang}"
    live.svc.register.save(RobotSpec(code=code, name="Off"), "def run(inputs, ctx):\n    return {}\n", author="anna")
    sign_in(page, live)
    page.locator("#register-button").click()  # the server's own loop makes the REST calls
    page.wait_for_url(f"{live.url}/admin/robots")
    assert code in registered(live)
    page.goto(f"{live.url}/admin/lang/{lang}?next=/admin/robots/{code}")
    page.locator("#disable-button").click()
    assert TEXT[lang]["disable"].format(code=code) in page.locator("#confirm .question").inner_text()
    page.locator("#confirm-cancel").click()
    page.wait_for_url(f"{live.url}/admin/robots/{code}")
    assert live.svc.register.state(code) == "active" and code in registered(live)
    page.locator("#disable-button").click()
    shot(page, f"confirm-disable-{lang}")
    page.locator("#confirm-yes").click()
    page.wait_for_url(f"{live.url}/admin/robots/{code}")
    assert page.locator("#disabled-note").is_visible() and page.locator("#enable-button").is_visible()
    assert live.svc.register.state(code) == "disabled"
    until(lambda: code not in registered(live), "the disabled robot was not unregistered")
    page.locator("#delete-button").click()
    assert TEXT[lang]["delete"].format(code=code) in page.locator("#confirm .question").inner_text()
    page.locator("#confirm-yes").click()
    page.wait_for_url(f"{live.url}/admin/robots")
    assert page.locator(f"tr[data-code='{code}']").count() == 0
    assert live.svc.register.state(code) == "deleted"
    actions = [e.action for e in live.svc.audit.recent(target=code)]
    assert actions == ["robot.delete", "robot.disable"]


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_portal_resync_asks_before_deleting(page: Any, live: Live, lang: str) -> None:
    without_quote = Router()  # the robots module after demo.quote was removed from its code
    for spec in router.triggers():
        without_quote.add_trigger(spec)
    live.svc.registry.router = without_quote
    try:
        sign_in(page, live)
        page.goto(f"{live.url}/admin/lang/{lang}?next=/admin/portals")
        row = page.locator(f"#portals-table tr[data-member='{live.portal.member_id}']")
        row.locator("button[type=submit]").last.click()
        assert TEXT[lang]["resync"] in page.locator("#confirm .question").inner_text()
        assert page.locator("#confirm-items tr[data-code='demo.quote']").count() == 1
        shot(page, f"confirm-resync-{lang}")
        page.locator("#confirm-no").click()
        page.wait_for_url(f"{live.url}/admin/portals")
        assert "demo.quote" in page.locator(".flash.warning").inner_text()
        assert "demo.quote" in registered(live)
        row.locator("button[type=submit]").last.click()
        page.locator("#confirm-yes").click()
        page.wait_for_url(f"{live.url}/admin/portals")
        assert "demo.quote" not in registered(live)
    finally:
        live.svc.registry.router = router
    page.goto(f"{live.url}/admin/robots")
    page.locator("#register-button").click()
    page.wait_for_url(f"{live.url}/admin/robots")
    assert "demo.quote" in registered(live)
