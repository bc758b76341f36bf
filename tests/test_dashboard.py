"""The dashboard and /metrics over real HTTP, on SQLite and PostgreSQL: a journal built with known outcomes
and run times, and the numbers both pages show checked against it and against each other."""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from b24robots.store.db import Database
from b24robots.store.models import InstallationRow, InvocationRow
from b24robots.store.stats import PERIODS, Stats, period_bounds
from b24robots.store.users import Users
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.web import metrics
from tests.conftest import new_pg_database
from tests.ui_helpers import PASSWORD, sign_in

HOUR = 3600.0


@dataclass(frozen=True)
class Entry:
    robot: str
    portal: int
    ago: float  # seconds before now it arrived
    state: str = "delivered"
    error: str = ""
    run: float | None = 0.1  # seconds it ran; None: not finished
    owed: bool = False


def add_portal(db: Database, domain: str) -> int:
    with db.write() as s:
        row = InstallationRow(
            member_id=f"m-{domain}",
            domain=domain,
            status="needs_reinstall",
            status_message="the refresh token was refused",
            client_endpoint=f"https://{domain}/rest/",
            server_endpoint="https://oauth.bitrix.info/rest/",
            created_at=time.time(),
            updated_at=time.time(),
        )
        s.add(row)
        s.flush()
        return int(row.id)


def write_journal(db: Database, entries: list[Entry], now: float) -> None:
    with db.write() as s:
        for n, e in enumerate(entries):
            received = now - e.ago
            s.add(
                InvocationRow(
                    event_token=f"tok-{n}-{random.random()}",
                    installation_id=e.portal,
                    robot_code=e.robot,
                    document_id=[],
                    document_type=[],
                    properties={},
                    log=[],
                    state=e.state,
                    error=e.error,
                    run_after=received,
                    received_at=received,
                    started_at=received + 0.01,
                    finished_at=None if e.run is None else received + 0.01 + e.run,
                    deliver_after=received if e.owed else None,
                )
            )


def nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def stored_run(e: Entry, now: float) -> float | None:
    """The run time as the database holds it: finished_at - started_at, both as write_journal stores them."""
    if e.run is None:
        return None
    received = now - e.ago
    return (received + 0.01 + e.run) - (received + 0.01)


def histogram_edge(value: float | None) -> float | None:
    """What the day and the week show for a nearest-rank run time: the upper edge of its histogram bin,
    1 ms * 2^(k/16) for the smallest k with the value at or below it (store/rollup.py)."""
    if value is None:
        return None
    k = max(0, math.ceil(16 * math.log2(value / 0.001))) if value > 0.001 else 0
    return 0.001 * 2 ** (k / 16)


def quantile(period: str, runs: list[float], q: float) -> float | None:
    exact = nearest_rank(runs, q)
    return exact if period == "hour" else histogram_edge(exact)


def same(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    return math.isclose(got, want, rel_tol=1e-9)


def expected(entries: list[Entry], period: str, now: float, key: str) -> dict[str, dict[str, float | int | None]]:
    """What the dashboard must show, worked out from the entries in Python (not through Stats)."""
    since, until, _, _ = period_bounds(period, now)
    out: dict[str, dict[str, float | int | None]] = {}
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        if since <= now - e.ago < until:
            groups.setdefault(e.robot if key == "robot" else str(e.portal), []).append(e)
    for k, es in groups.items():
        runs = [r for r in (stored_run(e, now) for e in es) if r is not None]
        out[k] = {
            "calls": len(es),
            "failures": sum(1 for e in es if e.state in ("failed", "dead") or e.error),
            "dead": sum(1 for e in es if e.state == "dead"),
            "p50": quantile(period, runs, 0.5),
            "p95": quantile(period, runs, 0.95),
        }
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
    else:
        yield new_pg_database(request.getfixturevalue("pg_server"), request.getfixturevalue("pg_template"))


@pytest.fixture
async def harness(tmp_path: Path, database_url: str) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(
        data_dir=tmp_path, database_url=database_url, workers=False, sandbox=False, settings={"metrics_token": "s"}
    ) as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        yield h


def build(h: RobotHarness, now: float) -> tuple[list[Entry], int, int]:
    first = h.svc.installations.get(h.portal.member_id).id
    second = add_portal(h.svc.db, "second.example.test")
    entries = [Entry("r.alpha", first, 120 + i, run=(i + 1) / 10) for i in range(7)]
    entries += [
        Entry("r.alpha", first, 200, error="the deal has no contact", run=2.5),  # a business failure
        Entry("r.alpha", first, 210, state="failed", error="timeout", run=None),  # a retry pending
        Entry("r.alpha", second, 220, state="dead", error="bad input", run=0.05),
        Entry("r.beta", second, 300, state="answered", run=0.3, owed=True),
        Entry("r.beta", second, 310, state="queued", run=None),
        Entry("r.beta", second, 3 * HOUR, run=4.0),  # in the day, not the hour
        Entry("r.beta", first, 3 * HOUR + 5, state="dead", error="gave up", run=1.0),
        Entry("r.gamma", first, 2 * 24 * HOUR, run=9.0),  # only in the week
        Entry("r.gamma", first, 30 * 24 * HOUR, run=9.0),  # in no period
    ]
    write_journal(h.svc.db, entries, now)
    return entries, first, second


def table_rows(html: str, table_id: str) -> dict[str, dict[str, str]]:
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    out = {}
    for key, cells in re.findall(r'<tr data-key="([^"]+)">(.*?)</tr>', body, re.S):
        out[key] = dict(re.findall(r'data-col="(\w+)">([^<]*)<', cells))
    return out


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def shown(value: float | int | None) -> str:
    return "—" if value is None else f"{value:.3f}"


async def test_dashboard_numbers_match_the_journal_and_metrics(harness: RobotHarness) -> None:
    now = time.time()
    entries, first, second = build(harness, now)
    domains = {str(first): harness.portal.domain, str(second): "second.example.test"}
    async with harness.client() as c:
        await sign_in(c)
        scraped = (await c.get("/metrics", headers={"Authorization": "Bearer s"})).text
        for period in PERIODS:
            page = await c.get("/admin/dashboard", params={"period": period})
            assert page.status_code == 200, page.text
            html = page.text
            robots = table_rows(html, "robots-stats")
            want = expected(entries, period, now, "robot")
            assert set(robots) == set(want), period
            for robot, numbers in want.items():
                row = robots[robot]
                for col in ("calls", "failures", "dead"):
                    assert int(row[col]) == numbers[col], (period, robot, col)
                    got = metric(scraped, f"b24robots_period_robot_{col}", period=period, robot=robot)
                    assert got == numbers[col], (period, robot, col)
                for col, q in (("p50", "0.5"), ("p95", "0.95")):
                    assert row[col] == shown(numbers[col]), (period, robot, col)
                    got = metric(scraped, "b24robots_period_robot_run_seconds", period=period, robot=robot, quantile=q)
                    assert got is not None and shown(got) == row[col]
            portals = table_rows(html, "portals-stats")
            want_portals = {domains[k]: v for k, v in expected(entries, period, now, "portal").items()}
            assert {k: int(v["calls"]) for k, v in portals.items()} == {k: v["calls"] for k, v in want_portals.items()}
            for domain, numbers in want_portals.items():
                assert metric(scraped, "b24robots_period_portal_dead", period=period, portal=domain) == numbers["dead"]
                assert portals[domain]["p95"] == shown(numbers["p95"])
            total = sum(int(v["calls"]) for v in want.values())
            assert f'data-total="calls">{total}<' in html
            # every chart says what it shows, and the period switch marks the period shown
            assert html.count('role="img"') == 4 and '<title id="chart-calls-title">' in html
            assert f'data-period="{period}" aria-current="page"' in html

    # the hour, known by hand: 12 calls; 3 failures (a business failure, a retry pending, a dead one);
    # 10 finished runs 0.05 0.1 0.2 0.3 0.3 0.4 0.5 0.6 0.7 2.5: p50 the 5th, p95 the 10th
    hour = Stats(harness.svc.db).window("hour", now)
    assert (hour.total.calls, hour.total.failures, hour.total.dead) == (12, 3, 1)
    assert hour.total.p50 == pytest.approx(0.3) and hour.total.p95 == pytest.approx(2.5)
    assert sum(b.calls for b in hour.buckets) == 12 and len(hour.buckets) == 12

    queues = table_rows(html, "queues")
    # second: one queued, one answer owed (its dead entry and its delivered one are neither); first: a retry
    assert queues["second.example.test"] == {"waiting": "1", "owed": "1"}
    assert queues[harness.portal.domain] == {"waiting": "1", "owed": "0"}
    assert metric(scraped, "b24robots_queue_depth", portal="second.example.test") == 1
    assert metric(scraped, "b24robots_answers_owed", portal="second.example.test") == 1
    assert metric(scraped, "b24robots_portal_needs_reinstall", portal="second.example.test") == 1
    assert metric(scraped, "b24robots_portal_needs_reinstall", portal=harness.portal.domain) == 0
    tokens = html.split('id="tokens"', 1)[1].split("</table>", 1)[0]
    assert "needs reinstall" in tokens and "the refresh token was refused" in tokens


async def test_dashboard_is_the_first_page_and_refuses_an_unknown_period(harness: RobotHarness) -> None:
    harness.svc.settings.metrics_token = SecretStr("s")
    async with harness.client() as c:
        before = await c.get("/admin/")
        assert before.status_code == 303 and before.headers["location"] == "/admin/login"
        await sign_in(c)
        for path in ("/admin", "/admin/"):
            home = await c.get(path)
            assert home.status_code == 303 and home.headers["location"] == "/admin/dashboard"
        empty = await c.get("/admin/dashboard")
        assert empty.status_code == 200 and 'data-total="calls">0<' in empty.text
        assert 'data-period="day" aria-current="page"' in empty.text  # the default period
        assert 'id="db-size"' in empty.text and "MiB" in empty.text
        # every time says its zone: the server's, with its offset, and the UTC moment for the browser
        span = re.search(r'id="period-span">(.*?)</p>', empty.text)
        assert span
        text = re.sub(r"<[^>]+>", "", span.group(1))
        assert re.search(r"\d{2}:\d{2}:\d{2} UTC[+-]\d{2}:\d{2} .*UTC[+-]\d{2}:\d{2}", text)
        moments = re.findall(r'<time datetime="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)" data-local>', span.group(1))
        assert len(moments) == 2
        bad = await c.get("/admin/dashboard", params={"period": "year"})
        assert bad.status_code == 400 and "hour, day or week" in bad.text
        c.cookies.set("b24r_lang", "ru")
        ru = await c.get("/admin/dashboard", params={"period": "week"})
        assert "<h1>Сводка</h1>" in ru.text and "Последняя неделя" in ru.text and "Вызовы по" not in ru.text


def test_buckets_and_quantiles_in_sql_match_python(db: Database) -> None:
    """Stats on its own, on both databases: random run times, each bucket's nearest-rank p50/p95 and
    counts equal what Python computes from the same rows."""
    with db.write() as s:
        inst = InstallationRow(
            member_id="m",
            domain="p.example.test",
            status="active",
            client_endpoint="https://p.example.test/rest/",
            server_endpoint="https://oauth.bitrix.info/rest/",
            created_at=0.0,
            updated_at=0.0,
        )
        s.add(inst)
        s.flush()
        portal = int(inst.id)
    rng = random.Random(18)
    now = 1_800_000_123.0
    entries = [
        Entry(rng.choice(["a", "b", "c"]), portal, rng.uniform(0, 24 * HOUR), run=round(rng.uniform(0, 3), 3))
        for _ in range(400)
    ]
    write_journal(db, entries, now)
    stats = Stats(db)
    for period in ("hour", "day"):
        window = stats.window(period, now)
        since, _, width, count = period_bounds(period, now)
        assert len(window.buckets) == count == {"hour": 12, "day": 24}[period]
        for i, bucket in enumerate(window.buckets):
            lo, hi = since + i * width, since + (i + 1) * width
            runs = [stored_run(e, now) or 0.0 for e in entries if lo <= now - e.ago < hi]
            assert bucket.calls == len(runs), (period, i)
            assert same(bucket.p50, quantile(period, runs, 0.5)), (period, i)
            assert same(bucket.p95, quantile(period, runs, 0.95)), (period, i)
        for r in window.by_robot:
            runs = [stored_run(e, now) or 0.0 for e in entries if e.robot == r.key and now - e.ago >= since]
            assert r.calls == len(runs) and same(r.p95, quantile(period, runs, 0.95))
            exact = nearest_rank(runs, 0.95)
            assert (
                exact is not None and r.p95 is not None and exact - 1e-9 <= r.p95 <= max(exact * 2 ** (1 / 16), 0.001)
            )


async def test_head_on_admin_pages_answers_like_get_without_a_body(harness: RobotHarness) -> None:
    async with harness.client() as c:
        anonymous = await c.head("/admin/dashboard")
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/admin/login")
        await sign_in(c)
        for path in ("/admin/dashboard", "/admin/robots", "/admin/journal", "/admin/portals", "/admin/login"):
            got, head = await c.get(path), await c.head(path)
            assert head.status_code == got.status_code, path
            assert head.content == b"" and head.headers.get("content-type") == got.headers.get("content-type"), path
            assert head.headers["content-security-policy"] == got.headers["content-security-policy"]
        assert (await c.head("/admin/no-such-page")).status_code == 404


async def test_metrics_reuse_a_periods_numbers_for_its_ttl_and_the_dashboard_stays_current(
    harness: RobotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    first = harness.svc.installations.get(harness.portal.member_id).id
    write_journal(harness.svc.db, [Entry("r.cached", first, 60, run=0.2)], now)
    async with harness.client() as c:
        await sign_in(c)

        async def scraped_calls() -> float | None:
            text = (await c.get("/metrics", headers={"Authorization": "Bearer s"})).text
            return metric(text, "b24robots_period_robot_calls", period="hour", robot="r.cached")

        assert await scraped_calls() == 1
        write_journal(harness.svc.db, [Entry("r.cached", first, 30, run=0.2)], now)
        assert await scraped_calls() == 1  # within PERIOD_METRICS_TTL: the week is not ranked again per scrape
        page = await c.get("/admin/dashboard", params={"period": "hour"})
        assert table_rows(page.text, "robots-stats")["r.cached"]["calls"] == "2"  # the dashboard reads it now
        monkeypatch.setitem(metrics.PERIOD_METRICS_TTL, "hour", 0.0)
        assert await scraped_calls() == 2
