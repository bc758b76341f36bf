"""A failed stored robot's journal entry in Debian chromium, in English and Russian: the version that ran
(linked to that version in the register), the log lines of each attempt and the outbound REST calls with
the attempt that made them and their timings."""

from __future__ import annotations

import time
from typing import Any

import pytest

from b24robots.policy import RetryRules
from b24robots.robots.spec import RobotSpec
from b24robots.store.journal import Invocation
from tests.ui.conftest import Live, _run_in_own_loop, shot
from tests.ui.test_browser import sign_in

pytestmark = pytest.mark.browser

FAILS = """
def run(inputs, ctx):
    ctx.log("reading deal " + ctx.document_id[2])
    deal = ctx.call("crm.deal.get", {"id": ctx.document_id[2].split("_")[-1]})
    ctx.log("title is " + deal["TITLE"])
    raise ValueError("the deal is not ready")
"""

TEXT = {
    "en": {"version": "version 1", "attempt": "Attempt {n}", "dead": "dead", "origin": "(stored)"},
    "ru": {"version": "версия 1", "attempt": "Попытка {n}", "dead": "не выполнен", "origin": "(в реестре)"},
}


def dead_entry(live: Live, code: str) -> Invocation:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = live.svc.journal.recent(robot=code)
        if rows and rows[0].state == "dead":
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"{code} did not end dead")


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_a_failed_stored_robot_shows_its_version_log_and_calls(page: Any, live: Live, lang: str) -> None:
    code = f"ui.facts_{lang}"
    live.svc.register.save(
        RobotSpec.from_document({"code": code, "name": "Facts", "return_properties": {"t": {"name": "T"}}}),
        FAILS,
        author="anna",
    )
    saved = live.svc.runner.rules
    live.svc.runner.rules = RetryRules(max_attempts=2, base_delay=0.1, max_delay=0.1)
    try:
        sign_in(page, live)
        page.locator("#register-button").click()  # registers the new robot on the portal
        page.wait_for_url(f"{live.url}/admin/robots")
        deal = live.portal.add_deal(TITLE="Draft order")
        document = ("crm", "CCrmDocumentDeal", f"DEAL_{deal['ID']}")
        _run_in_own_loop(lambda: live.sim.start_robot(live.portal, code, document_id=document))
        inv = dead_entry(live, code)
    finally:
        live.svc.runner.rules = saved
    page.goto(f"{live.url}/admin/lang/{lang}?next=/admin/journal/{inv.id}")
    text = TEXT[lang]
    assert page.locator("#robot-origin").inner_text() == text["origin"]  # translated, not the stored word
    link = page.locator("#ran-version")
    assert link.inner_text() == text["version"]
    assert link.get_attribute("href") == f"/admin/robots/{code}/versions#v1"
    for n in (1, 2):
        heading = page.locator(f"#attempt-{n}").inner_text()
        assert text["attempt"].format(n=n) in heading
    assert text["dead"] in page.locator("#attempt-2").inner_text()
    lines = page.locator("#log li").all_inner_texts()
    assert lines == [f"reading deal DEAL_{deal['ID']}", "title is Draft order"]
    first = page.locator("#attempt-1 + ol.log li").all_inner_texts()
    assert first == lines  # the first attempt's lines are kept, not overwritten by the second's
    rows = page.locator("#connection-calls tbody tr")
    assert rows.count() == 2
    cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(2)]
    assert [c[0] for c in cells] == ["1", "2"] and all("crm.deal.get" in c[3] and c[4] == "200" for c in cells)
    assert all(c[5].endswith("ms") for c in cells)
    assert "the deal is not ready" in page.locator("#error").inner_text()
    table = page.locator(".scroll-x").bounding_box()
    card = page.locator("#connection-calls").locator("xpath=ancestor::section[1]").bounding_box()
    assert table["x"] + table["width"] <= card["x"] + card["width"] + 1  # the calls stay inside their card
    shot(page, f"journal-entry-facts-{lang}")
    link.click()
    page.wait_for_url(f"{live.url}/admin/robots/{code}/versions#v1")
    assert page.locator("#v1").is_visible()
