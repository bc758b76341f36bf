"""Admin UI sign-in over real HTTP (ASGI): sessions, CSRF, rate limiting, one-time links, privacy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from b24robots.errors import AdminAuthError, TooManyAttempts
from b24robots.store.db import Database
from b24robots.store.users import BASE_DELAY, FAILURE_WINDOW, FREE_FAILURES, Users
from b24robots.testing.app_fixtures import PUBLIC_URL, RobotHarness
from tests.ui_helpers import PASSWORD, csrf_of, sign_in

ADMIN_PAGES = [
    "/admin/robots", "/admin/new-robot", "/admin/robots/x.y", "/admin/robots/x.y/versions", "/admin/journal",
    "/admin/journal/dead", "/admin/journal/1", "/admin/journal/rows", "/admin/portals",
]  # fmt: skip


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        yield h


def client_from(h: RobotHarness, address: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=h.asgi, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL)


@pytest.mark.parametrize("path", ADMIN_PAGES)
async def test_every_admin_page_needs_a_signed_in_user(harness: RobotHarness, path: str) -> None:
    async with harness.client() as c:
        resp = await c.get(path)
    assert resp.status_code == 303
    assert resp.headers["location"].startswith("/admin/login?next=")


async def test_htmx_requests_of_a_stale_session_are_sent_to_the_login_page(harness: RobotHarness) -> None:
    async with harness.client() as c:
        resp = await c.get("/admin/journal/rows", headers={"HX-Request": "true"})
    assert resp.status_code == 401 and resp.headers["HX-Redirect"].startswith("/admin/login")


async def test_robot_endpoints_stay_public(harness: RobotHarness) -> None:
    async with harness.client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        robot = await c.post(
            "/b24/robot", content=b"code=x", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert robot.status_code == 401 and robot.json()["error"] == "unauthorized"
        static = await c.get("/admin/static/vendor/htmx.min.js")
        assert static.status_code == 200 and "htmx" in static.text[:200]


async def test_sign_in_sets_a_session_and_sign_out_ends_it(harness: RobotHarness) -> None:
    async with harness.client() as c:
        await sign_in(c)
        page = await c.get("/admin/robots")
        assert page.status_code == 200 and "anna" in page.text
        for header in ("Content-Security-Policy", "X-Frame-Options", "Cache-Control"):
            assert header in page.headers
        cookie = page.headers.get("set-cookie", "") or ""
        assert "secret" not in cookie
        out = await c.post("/admin/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert (await c.get("/admin/robots")).status_code == 303


async def test_wrong_password_is_refused_with_a_message(harness: RobotHarness) -> None:
    async with harness.client() as c:
        page = await c.get("/admin/login")
        resp = await c.post("/admin/login", data={"csrf": csrf_of(page.text), "username": "anna", "password": "nope"})
    assert resp.status_code == 401
    assert "Wrong user name or password." in resp.text
    assert 'value="anna"' in resp.text  # the form keeps the user name


async def test_a_post_without_the_csrf_token_is_refused(harness: RobotHarness) -> None:
    async with harness.client() as c:
        csrf = await sign_in(c)
        no_token = await c.post("/admin/actions/sync", data={})
        assert no_token.status_code == 403 and "Form expired" in no_token.text
        wrong = await c.post("/admin/actions/sync", data={"csrf": csrf[:-2] + "xx"})
        assert wrong.status_code == 403
        by_header = await c.post("/admin/actions/check", data={"source": "x ="}, headers={"X-CSRF-Token": csrf})
        assert by_header.status_code == 200
    # a login POST from another site (no session cookie, no token) is refused too
    async with harness.client() as other:
        resp = await other.post("/admin/login", data={"username": "anna", "password": PASSWORD})
        assert resp.status_code == 403


async def test_login_is_throttled_per_account_but_not_for_a_browser_that_signed_in_before(
    harness: RobotHarness,
) -> None:
    async with client_from(harness, "10.0.0.3") as known:  # anna's own browser
        csrf = await sign_in(known)
        assert (await known.post("/admin/logout", data={"csrf": csrf})).status_code == 303
        async with client_from(harness, "10.0.0.1") as c:
            token = csrf_of((await c.get("/admin/login")).text)
            for _ in range(FREE_FAILURES):
                r = await c.post("/admin/login", data={"csrf": token, "username": "anna", "password": "bad"})
                assert r.status_code == 401
            blocked = await c.post("/admin/login", data={"csrf": token, "username": "anna", "password": PASSWORD})
            assert blocked.status_code == 429
            assert "Too many failed sign-ins" in blocked.text
            assert BASE_DELAY - 5 < int(blocked.headers["Retry-After"]) <= BASE_DELAY + 1
        async with client_from(harness, "10.0.0.2") as stranger:  # the account waits for every new browser
            token = csrf_of((await stranger.get("/admin/login")).text)
            r = await stranger.post("/admin/login", data={"csrf": token, "username": "anna", "password": PASSWORD})
            assert r.status_code == 429
        await sign_in(known)  # ...but not for the one anna signed in with before: no lockout


def test_delays_grow_then_start_over_after_a_quiet_day(sqlite_db: Database) -> None:
    users = Users(sqlite_db)
    users.create("boris", PASSWORD)
    now = 1_000_000.0
    for _ in range(FREE_FAILURES):
        with pytest.raises(AdminAuthError):
            users.authenticate("boris", "bad", "1.2.3.4", now=now)
    waits = []
    for _ in range(4):
        with pytest.raises(TooManyAttempts) as refused:
            users.authenticate("boris", PASSWORD, "1.2.3.4", now=now)
        waits.append(refused.value.retry_after)
        now += refused.value.retry_after
        with pytest.raises(AdminAuthError):  # the wait is over: one more check, which fails
            users.authenticate("boris", "bad", "1.2.3.4", now=now)
    assert waits == [BASE_DELAY * 2**i for i in range(4)]
    later = now + FAILURE_WINDOW + 1
    assert users.authenticate("boris", PASSWORD, "1.2.3.4", now=later).username == "boris"


async def test_one_time_login_link_works_once(harness: RobotHarness) -> None:
    token = Users(harness.svc.db).issue_link_token("anna")
    async with harness.client() as c:
        first = await c.get(f"/admin/login/link/{token}")
        assert first.status_code == 303 and first.headers["location"] == "/admin/dashboard"
        assert (await c.get("/admin/robots")).status_code == 200
    async with harness.client() as c:
        again = await c.get(f"/admin/login/link/{token}")
        assert again.status_code == 401 and "not valid any more" in again.text
        assert (await c.get("/admin/robots")).status_code == 303


def test_login_links_expire_and_only_their_hash_is_stored(sqlite_db: Database) -> None:
    users = Users(sqlite_db)
    users.create("anna", PASSWORD)
    token = users.issue_link_token("anna", now=1000.0)
    with sqlite_db.read() as s:
        stored = [row[0] for row in s.execute(text("SELECT token_hash FROM login_tokens"))]
    assert token not in stored and len(stored) == 1
    with pytest.raises(AdminAuthError, match="expired"):
        users.redeem_link_token(token, now=1000.0 + 601)


async def test_a_forged_or_foreign_cookie_is_anonymous(harness: RobotHarness) -> None:
    async with harness.client() as c:
        await sign_in(c)
        value = next(iter(c.cookies.jar)).value
        c.cookies.clear()
        c.cookies.set("b24r_admin", value[:-3] + "AAA", domain="robots.example.test", path="/admin")
        assert (await c.get("/admin/robots")).status_code == 303


async def test_deleting_a_user_ends_their_session(harness: RobotHarness) -> None:
    async with harness.client() as c:
        await sign_in(c)
        Users(harness.svc.db).delete("anna")
        assert (await c.get("/admin/robots")).status_code == 303


async def test_no_token_or_secret_is_ever_shown(harness: RobotHarness) -> None:
    secrets = [t for t in harness.sim.access_tokens] + [t for t in harness.sim.refresh_tokens]
    secrets += [inst.application_token for inst in harness.portal.installations.values()]
    secrets.append(harness.app.client_secret)
    assert secrets
    async with harness.client() as c:
        await sign_in(c)
        for path in ("/admin/robots", "/admin/portals", "/admin/journal"):
            html = (await c.get(path)).text
            for secret in secrets:
                assert secret not in html, path


def test_user_names_and_passwords_are_validated(sqlite_db: Database) -> None:
    users = Users(sqlite_db)
    with pytest.raises(AdminAuthError, match="too short"):
        users.create("anna", "short")
    with pytest.raises(AdminAuthError, match="not allowed"):
        users.create("an na", PASSWORD)
    users.create("anna", PASSWORD)
    with pytest.raises(AdminAuthError, match="already exists"):
        users.create("anna", PASSWORD)
    with sqlite_db.read() as s:
        stored = s.execute(text("SELECT password_hash FROM admin_users")).scalar_one()
    assert stored.startswith("$argon2") and PASSWORD not in stored
