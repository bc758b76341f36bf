"""The editor's last polish in Debian chromium, in English and Russian: the parameter table keeps usable
inputs in Russian, the test-run panel stays after a failed save, the rollback asks first in Russian, and
every time is shown in the browser's own zone (Chromium's zone override) with that zone's offset."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.ui.conftest import Live, shot
from tests.ui.test_browser import GOOD, set_code, sign_in

pytestmark = pytest.mark.browser

FIELDS = ("key", "name", "name_ru", "default", "options")


def russian(page: Any, live: Live) -> None:
    page.context.add_cookies([{"name": "b24r_lang", "value": "ru", "url": live.url}])


def input_widths(page: Any, path: str) -> dict[str, float]:
    page.goto(path)
    widths: dict[str, float] = page.evaluate(
        """fields => Object.fromEntries(fields.map(f => [f,
            document.querySelector(`#params-in [name='in.0.${f}']`).getBoundingClientRect().width]))""",
        [*FIELDS, "type"],
    )
    return widths


def test_the_parameter_inputs_keep_their_width_in_russian(page: Any, live: Live) -> None:
    """On a stored robot's page the form shares the width with the test-run panel: the tightest place."""
    sign_in(page, live)
    add_robot(page, live, "polish.widths")
    path = f"{live.url}/admin/robots/polish.widths"
    english = input_widths(page, path)
    russian(page, live)
    ru = input_widths(page, path)
    shot(page, "robot-editor-ru")
    assert page.locator("#params-in th").first.inner_text() == "Ключ"
    for field in FIELDS:
        assert english[field] >= 72, (field, english)  # 4.5rem: room for a key or a default value
        assert ru[field] >= 0.9 * english[field], (field, ru, english)  # the longer headings take no room
    assert ru["type"] >= 0.9 * english["type"]
    # no heading breaks inside a word but at a soft hyphen of its translation: each fits its column
    assert page.evaluate(
        "() => [...document.querySelectorAll('#params-in th')].every(th => th.scrollWidth <= th.clientWidth)"
    )
    # nothing spills out sideways: not the top bar with its longer Russian labels, not the tables
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate(
        "() => [...document.querySelectorAll('fieldset.params')].every(f => f.scrollWidth <= f.clientWidth)"
    )


def add_robot(page: Any, live: Live, code: str) -> None:
    page.goto(f"{live.url}/admin/new-robot")
    page.get_by_label("Code", exact=True).first.fill(code)
    page.locator("#name").fill("Polish")
    page.locator("[data-add-row='in']").click()
    page.locator("input[name='in.0.key']").fill("amount")
    page.locator("input[name='in.0.name']").fill("Amount")
    page.locator("select[name='in.0.type']").select_option("double")
    page.locator("[data-add-row='in']").click()
    page.locator("input[name='in.1.key']").fill("vat")
    page.locator("input[name='in.1.name']").fill("VAT")
    page.locator("input[name='in.1.default']").fill("20")
    page.locator("[data-add-row='out']").click()
    page.locator("input[name='out.0.key']").fill("total")
    page.locator("input[name='out.0.name']").fill("Total")
    page.locator("select[name='out.0.type']").select_option("double")
    set_code(page, GOOD)
    page.locator("#save-button").click()
    page.wait_for_url(f"{live.url}/admin/robots/{code}")


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_the_test_run_panel_stays_after_a_failed_save(page: Any, live: Live, lang: str) -> None:
    sign_in(page, live)
    code = f"polish.failed_save_{lang}"
    add_robot(page, live, code)
    if lang == "ru":
        russian(page, live)
        page.reload()
    set_code(page, "def run(inputs, ctx):\n    return {'total': \n")
    page.locator("#save-button").click()
    page.wait_for_selector("#problems li")
    assert ("строка 2" if lang == "ru" else "line 2") in page.locator("#problems").inner_text()
    flash = page.locator(".flash.error").inner_text()
    assert flash == (
        "Робот не сохранён: исправьте отмеченные поля."
        if lang == "ru"
        else "The robot was not saved: fix the marked fields."
    )
    panel = page.locator("#test-form")
    assert panel.is_visible()
    assert page.locator("#test-title").inner_text() == ("Пробный запуск" if lang == "ru" else "Test run")
    # the panel still runs the active version, which the failed save left alone
    page.locator("#ti-amount").fill("100")
    panel.locator("button[type=submit]").click()
    page.wait_for_selector("#test-outcome")
    assert "120.0" in page.locator("#test-outputs").inner_text()
    assert page.locator("#active-version").inner_text() == "v1"


def test_the_rollback_asks_first_in_russian(page: Any, live: Live) -> None:
    sign_in(page, live)
    code = "polish.rollback"
    add_robot(page, live, code)
    set_code(page, GOOD.replace("round(", "1 + round("))
    page.locator("#save-button").click()
    page.wait_for_selector("text=Saved version 2")
    russian(page, live)
    page.goto(f"{live.url}/admin/robots/{code}/versions")
    page.get_by_role("button", name="Сделать активной версию 1").click()
    question = page.locator("#confirm").inner_text()
    assert f"Сделать версию 1 робота {code} рабочей, начиная со следующего вызова?" in question
    assert "Активная сейчас версия 2 остаётся в истории" in question
    active = live.svc.register.active(code)
    assert active is not None and active.version == 2  # nothing changed before the answer
    page.locator("#confirm-yes").click()
    page.wait_for_selector(f"text=Версия 1 робота {code} теперь активна.")
    active = live.svc.register.active(code)
    assert active is not None and active.version == 1


@pytest.fixture
def zoned(chrome: Any) -> Iterator[Any]:
    """Pages of browsers in given time zones (Playwright sets them with CDP Emulation.setTimezoneOverride)."""
    contexts: list[Any] = []

    def open_in(zone: str) -> Any:
        context = chrome.new_context(viewport={"width": 1360, "height": 900}, locale="en-US", timezone_id=zone)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_in
    for context in contexts:
        context.close()


def shown_in(zone: str, utc: str) -> str:
    moment = datetime.fromisoformat(utc.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC{offset[:3]}:{offset[3:]}"


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York"])
def test_times_show_in_the_browsers_zone(zoned: Any, live: Live, zone: str) -> None:
    page = zoned(zone)
    sign_in(page, live)
    code = f"polish.zone_{zone.split('/')[1].lower()}"
    add_robot(page, live, code)
    for path in (f"/admin/robots/{code}/versions", "/admin/dashboard"):
        page.goto(f"{live.url}{path}")
        page.wait_for_function("() => [...document.querySelectorAll('time[data-local]')].every(t => t.dataset.zone)")
        times = page.locator("time[data-local]")
        assert times.count() >= 1, path
        for i in range(times.count()):
            t = times.nth(i)
            utc = t.get_attribute("datetime")
            assert utc is not None and utc.endswith("Z")
            assert t.inner_text() == shown_in(zone, utc), path
            assert t.get_attribute("data-zone") == zone
            title = t.get_attribute("title") or ""
            # the server's rendering stays in the title (this server runs in its own zone)
            assert title.startswith(f"{zone} · ") and title != f"{zone} · {t.inner_text()}"
    # the same moment reads differently in another zone: the text comes from the browser
    assert page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone") == zone
