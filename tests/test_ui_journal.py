"""Admin UI journal, dead letters and portals over real HTTP, and the UI's languages."""

from __future__ import annotations

import gettext
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from b24robots import Int, Params, RobotContext, Router, String
from b24robots.store.users import Users
from b24robots.testing.app_fixtures import RobotHarness
from b24robots.web.admin.i18n import LOCALE_DIR, extract_messages, pick_language
from tests.ui_helpers import PASSWORD, csrf_of, sign_in

router = Router()


class EchoIn(Params):
    word = String("Word", required=True)
    n = Int("N")


class EchoOut(Params):
    echo = String("Echo")


@router.robot("ui.echo", name="Echo", inputs=EchoIn, outputs=EchoOut)
def echo(inputs: EchoIn, ctx: RobotContext) -> EchoOut:
    ctx.log(f"echo {inputs.word}")
    return EchoOut(echo=inputs.word * (inputs.n or 1))


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(router, data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        yield h


@pytest.fixture
async def client(harness: RobotHarness) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with harness.client() as c:
        yield c, await sign_in(c)


def rows(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr data-id="(\d+)" data-state="(\w+)">', html)


async def test_journal_lists_calls_live_and_filters(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str]
) -> None:
    c, _ = client
    page = await c.get("/admin/journal")
    assert rows(page.text) == [] and 'hx-trigger="every 2s"' in page.text
    await harness.run_robot("ui.echo", properties={"word": "hi", "n": 2})
    await harness.run_robot("ui.echo", properties={"word": "x", "n": "abc"})  # not a number: dead
    live = await c.get("/admin/journal/rows")  # what the page polls
    assert [s for _, s in rows(live.text)] == ["dead", "delivered"]
    assert live.text.startswith('<tbody id="journal-rows"')
    delivered = await c.get("/admin/journal", params={"status": "delivered"})
    assert [s for _, s in rows(delivered.text)] == ["delivered"]
    member = harness.portal.member_id
    by_portal = await c.get("/admin/journal", params={"portal": member, "robot": "ui.echo", "since": "15m"})
    assert len(rows(by_portal.text)) == 2
    other_robot = await c.get("/admin/journal", params={"robot": "ui.other"})
    assert rows(other_robot.text) == []
    dead = await c.get("/admin/journal/dead")
    assert [s for _, s in rows(dead.text)] == ["dead"] and "bad input" in dead.text
    dead_rows = await c.get("/admin/journal/rows", params={"dead": "1"})
    assert [s for _, s in rows(dead_rows.text)] == ["dead"]


async def test_journal_detail_retry_and_replay(harness: RobotHarness, client: tuple[httpx.AsyncClient, str]) -> None:
    c, csrf = client
    await harness.run_robot("ui.echo", properties={"word": "ok"})
    inv = harness.svc.journal.recent()[0]
    detail = await c.get(f"/admin/journal/{inv.id}")
    assert "<li>echo ok</li>" in detail.text and '"echo": "ok"' in detail.text
    assert harness.portal.domain in detail.text and 'id="timings"' in detail.text
    assert f'action="/admin/journal/{inv.id}/retry"' not in detail.text  # delivered: only replay
    replay = await c.post(f"/admin/journal/{inv.id}/replay", data={"csrf": csrf})
    assert replay.status_code == 303
    new_id = int(replay.headers["location"].rsplit("/", 1)[1])
    assert new_id != inv.id and harness.svc.journal.get(new_id).replay_of == inv.id
    await harness.until_idle()
    assert harness.svc.journal.get(new_id).state in ("answered", "delivered")
    # a dead entry can be retried; a delivered one cannot
    await harness.run_robot("ui.echo", properties={"word": "x", "n": "abc"})
    dead = harness.svc.journal.recent(state="dead")[0]
    page = await c.get(f"/admin/journal/{dead.id}")
    assert f'action="/admin/journal/{dead.id}/retry"' in page.text
    retry = await c.post(f"/admin/journal/{dead.id}/retry", data={"csrf": csrf})
    assert retry.status_code == 303
    await harness.until_idle()
    assert harness.svc.journal.get(dead.id).state == "dead"  # the input is still bad: dead again
    refused = await c.post(f"/admin/journal/{inv.id}/retry", data={"csrf": csrf})
    assert refused.status_code == 303
    assert "only failed or dead ones can be retried" in (await c.get(refused.headers["location"])).text
    assert (await c.get("/admin/journal/999999")).status_code == 404
    assert (await c.get("/admin/journal/abc")).status_code == 404


async def test_portals_page_limits_and_resync(harness: RobotHarness, client: tuple[httpx.AsyncClient, str]) -> None:
    c, csrf = client
    member = harness.portal.member_id
    page = await c.get("/admin/portals")
    row = re.search(rf'<tr data-member="{member}">.*?</tr>', page.text, re.S)
    assert row and harness.portal.domain in row.group(0) and "valid until" in row.group(0)
    assert "1 / 1" in row.group(0)  # robots registered / declared
    resp = await c.post(f"/admin/portals/{member}/limits", data={"csrf": csrf, "rate": "5", "burst": "250"})
    assert resp.status_code == 303
    inst = harness.svc.installations.get(member)
    assert (inst.rate, inst.burst) == (5.0, 250)
    bad = await c.post(f"/admin/portals/{member}/limits", data={"csrf": csrf, "rate": "-1", "burst": "x"})
    assert bad.status_code == 303
    assert "Give the rate as a number" in (await c.get("/admin/portals")).text
    zero = await c.post(f"/admin/portals/{member}/limits", data={"csrf": csrf, "rate": "0", "burst": "5"})
    assert zero.status_code == 303
    assert "rate must be a positive number" in (await c.get("/admin/portals")).text
    assert harness.svc.installations.get(member).rate == 5.0
    # the date culture: an override, a refused value, back to the portal's language
    assert "portal language (en)" in (await c.get("/admin/portals")).text
    resp = await c.post(f"/admin/portals/{member}/culture", data={"csrf": csrf, "culture": "de"})
    assert resp.status_code == 303 and harness.svc.installations.get(member).culture == "de"
    assert "dates are read as de: DD.MM.YYYY" in (await c.get("/admin/portals")).text
    await c.post(f"/admin/portals/{member}/culture", data={"csrf": csrf, "culture": "klingon"})
    assert "unknown culture" in (await c.get("/admin/portals")).text
    assert harness.svc.installations.get(member).culture == "de"
    await c.post(f"/admin/portals/{member}/culture", data={"csrf": csrf, "culture": "auto"})
    inst = harness.svc.installations.get(member)
    assert inst.culture == "" and inst.date_culture.describe() == "en: MM/DD/YYYY"
    sync = await c.post(f"/admin/portals/{member}/sync", data={"csrf": csrf})
    assert sync.status_code == 303
    assert "0 added, 0 updated, 0 removed" in (await c.get("/admin/portals")).text
    # an expired access token and a portal that needs a reinstall are told apart
    harness.svc.tokens.mark_needs_reinstall(member, "refresh token refused")
    page = await c.get("/admin/portals")
    assert "needs reinstall" in page.text and "refresh token refused" in page.text


async def test_language_from_accept_language_and_the_switch(harness: RobotHarness) -> None:
    async with harness.client() as c:
        ru = await c.get("/admin/login", headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"})
        assert "Вход в b24robots" in ru.text and 'lang="ru"' in ru.text
        en = await c.get("/admin/login", headers={"Accept-Language": "de-DE,en;q=0.5"})
        assert "Sign in to b24robots" in en.text
        switch = await c.get("/admin/lang/ru", params={"next": "/admin/login"})
        assert switch.status_code == 303 and switch.headers["location"] == "/admin/login"
        page = await c.get("/admin/login", headers={"Accept-Language": "en"})
        assert "Вход в b24robots" in page.text  # the cookie wins
        token = csrf_of(page.text)
        await c.post("/admin/login", data={"csrf": token, "username": "anna", "password": PASSWORD})
        robots = await c.get("/admin/robots")
        assert "Зарегистрировать в Битрикс24" in robots.text and "Роботы" in robots.text
        evil = await c.get("/admin/lang/en", params={"next": "https://evil.example/"})
        assert evil.headers["location"] == "/admin/dashboard"


def test_pick_language() -> None:
    assert pick_language(None, "ru-RU,ru;q=0.9") == "ru"
    assert pick_language(None, "en;q=0.3, ru;q=0.8") == "ru"
    assert pick_language(None, "fr, de") == "en"
    assert pick_language(None, "ru;q=0") == "en"
    assert pick_language("en", "ru") == "en"
    assert pick_language("xx", "ru") == "ru"
    assert pick_language(None, ";;;q=abc,") == "en"


def _po_entries(path: Path) -> dict[str, str]:
    """msgid -> msgstr of a .po file (single-line entries, as our catalogs are written)."""
    entries: dict[str, str] = {}
    msgid = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("msgid "):
            msgid = line[7:-1].encode().decode("unicode_escape").encode("latin-1").decode("utf-8")
        elif line.startswith("msgstr ") and msgid is not None:
            entries[msgid] = line[8:-1].encode().decode("unicode_escape").encode("latin-1").decode("utf-8")
            msgid = None
    entries.pop("", None)
    return entries


def test_every_ui_string_is_translated_to_russian() -> None:
    messages = extract_messages()
    catalog = _po_entries(LOCALE_DIR / "ru" / "LC_MESSAGES" / "b24robots.po")
    missing = sorted(m for m in messages if not catalog.get(m))
    assert not missing, f"add Russian translations to web/locale/ru/LC_MESSAGES/b24robots.po: {missing}"
    for message, text in catalog.items():
        placeholders = sorted(re.findall(r"%\((\w+)\)\w", message))
        assert placeholders == sorted(re.findall(r"%\((\w+)\)\w", text)), message


def test_compiled_catalogs_match_their_sources() -> None:
    for lang in ("ru", "en"):
        po = _po_entries(LOCALE_DIR / lang / "LC_MESSAGES" / "b24robots.po")
        with (LOCALE_DIR / lang / "LC_MESSAGES" / "b24robots.mo").open("rb") as fh:
            mo = gettext.GNUTranslations(fh)
        for msgid, msgstr in po.items():
            assert mo.gettext(msgid) == (msgstr or msgid), f"{lang}: recompile the .mo (msgfmt) for {msgid!r}"
