"""The dashboard in Debian chromium, in English and Russian: the first page after sign-in, the period
switch, a chart with its title and the table beside it holding the journal's numbers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import update

from b24robots.store.models import InvocationRow, StatsHourRow
from tests.test_dashboard import Entry, histogram_edge, write_journal
from tests.ui.conftest import Live, shot
from tests.ui.test_browser import PASSWORD

pytestmark = pytest.mark.browser


def test_dashboard_period_switch_chart_and_table_in_both_languages(page: Any, live: Live) -> None:
    portal = live.svc.installations.get(live.portal.member_id).id
    entries = [Entry("ui.dash", portal, 60 + i, run=0.1 * (i + 1)) for i in range(4)]
    entries += [Entry("ui.dash", portal, 90, state="dead", error="bad input", run=0.05)]
    entries += [Entry("ui.dash", portal, 5 * 3600, run=1.0)]  # in the day, not in the hour
    write_journal(live.svc.db, entries, time.time())
    page.goto(f"{live.url}/admin/")
    page.get_by_label("User name").fill("anna")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live.url}/admin/dashboard")  # the first page
    row = page.locator("#robots-stats tr[data-key='ui.dash']")
    assert row.locator("[data-col='calls']").inner_text() == "6"
    assert row.locator("[data-col='dead']").inner_text() == "1"
    assert page.locator("svg#chart-calls title").first.text_content().startswith("Calls per 1 h")
    page.get_by_role("link", name="Last hour").click()
    page.wait_for_url(f"{live.url}/admin/dashboard?period=hour")
    assert page.locator("a[data-period='hour']").get_attribute("aria-current") == "page"
    assert row.locator("[data-col='calls']").inner_text() == "5"
    assert row.locator("[data-col='failures']").inner_text() == "1"
    assert row.locator("[data-col='p50']").inner_text() == "0.200"  # 0.05 0.1 0.2 0.3 0.4: the 3rd
    page.get_by_text("Show as a table").click()
    assert page.locator("#calls-table").is_visible()
    assert page.locator("svg#chart-calls rect.c-dead > title").count() == 1  # one bar part, besides the legend
    shot(page, "dashboard")
    page.get_by_role("link", name="Русский").click()
    page.get_by_role("link", name="Последняя неделя").click()
    page.wait_for_url(f"{live.url}/admin/dashboard?period=week")
    assert page.locator("h1").inner_text() == "Сводка"
    assert page.locator("a[data-period='week']").get_attribute("aria-current") == "page"
    assert page.locator("#robots-stats tr[data-key='ui.dash'] [data-col='calls']").inner_text() == "6"
    assert page.locator("svg#chart-robots title").first.text_content() == "Вызовы по роботам"
    page.get_by_role("link", name="English").click()


def test_the_day_follows_a_run_that_finished_after_its_hour_ended(page: Any, live: Live) -> None:
    """The day reads ended hours from the rollup: a call of four hours ago, waiting for a retry when its
    hour was folded, shows its success and run time once the retry ends, in the page as in the journal."""
    portal = live.svc.installations.get(live.portal.member_id).id
    now = time.time()
    write_journal(live.svc.db, [Entry("ui.late", portal, 4 * 3600, run=0.3)], now)
    with live.svc.db.write() as s:
        retry = InvocationRow(
            event_token=f"ui-late-{now}", installation_id=portal, robot_code="ui.late", document_id=[],
            document_type=[], properties={}, log=[], state="failed", error="timeout", run_after=now + 86400,
            received_at=now - 4 * 3600 + 1, started_at=now - 4 * 3600 + 1, finished_at=None,
        )  # fmt: skip
        s.add(retry)
        s.flush()
        retry_id = retry.id
    page.goto(f"{live.url}/admin/login")
    page.get_by_label("User name").fill("anna")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live.url}/admin/dashboard")
    row = page.locator("#robots-stats tr[data-key='ui.late']")
    assert row.locator("[data-col='calls']").inner_text() == "2"
    assert row.locator("[data-col='failures']").inner_text() == "1"
    assert row.locator("[data-col='p95']").inner_text() == f"{histogram_edge(0.3):.3f}"
    folded = int((now - 4 * 3600) // 3600)
    with live.svc.db.read() as s:
        assert s.get(StatsHourRow, folded) is not None  # the page read that hour from the rollup
    with live.svc.db.write() as s:  # the retry ran just now, for 8 s, and was answered
        s.execute(
            update(InvocationRow)
            .where(InvocationRow.id == retry_id)
            .values(state="delivered", error="", started_at=now - 9.0, finished_at=now - 1.0, delivered_at=now)
        )
    page.reload()
    assert row.locator("[data-col='calls']").inner_text() == "2"
    assert row.locator("[data-col='failures']").inner_text() == "0"
    assert row.locator("[data-col='p95']").inner_text() == f"{histogram_edge(8.0):.3f}"
    page.get_by_role("link", name="Русский").click()
    assert page.locator("#robots-stats tr[data-key='ui.late'] [data-col='p95']").inner_text() == (
        f"{histogram_edge(8.0):.3f}"
    )
    page.get_by_role("link", name="English").click()
