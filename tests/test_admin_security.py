"""The admin UI and the public endpoints under attack, over real HTTP (ASGI) on real databases:
revocable sessions, an honest sign-in throttle, bounded form bodies and ids, what is public, file
modes and the audit log."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from b24robots.store.audit import Audit
from b24robots.store.users import FREE_FAILURES, Users
from b24robots.testing.app_fixtures import PUBLIC_URL, RobotHarness
from tests.conftest import new_pg_database
from tests.ui_helpers import PASSWORD, csrf_of, robot_form, sign_in

HOST = "robots.example.test"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(data_dir=tmp_path / "data", sandbox=False) as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        yield h


def client_from(h: RobotHarness, address: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=h.asgi, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL)


def session_cookie(c: httpx.AsyncClient) -> str:
    return next(cookie.value for cookie in c.cookies.jar if cookie.name == "b24r_admin")


async def with_cookie(h: RobotHarness, value: str, path: str = "/admin/robots") -> int:
    async with h.client() as other:
        other.cookies.set("b24r_admin", value, domain=HOST, path="/admin")
        return (await other.get(path)).status_code


# --- 1. sessions can be revoked ---------------------------------------------------------------


async def test_a_copied_cookie_stops_working_after_sign_out(harness: RobotHarness) -> None:
    async with harness.client() as c:
        csrf = await sign_in(c)
        stolen = session_cookie(c)
        assert await with_cookie(harness, stolen) == 200
        assert (await c.post("/admin/logout", data={"csrf": csrf})).status_code == 303
    assert await with_cookie(harness, stolen) == 303


async def test_a_password_change_ends_every_session(harness: RobotHarness) -> None:
    async with harness.client() as c:
        await sign_in(c)
        Users(harness.svc.db).set_password("anna", "another good password")
        assert (await c.get("/admin/robots")).status_code == 303


async def test_sign_out_everywhere_ends_the_other_browsers_too(harness: RobotHarness) -> None:
    async with harness.client() as laptop, harness.client() as phone:
        await sign_in(laptop)
        csrf = await sign_in(phone)
        assert (await laptop.get("/admin/robots")).status_code == 200
        out = await phone.post("/admin/logout-everywhere", data={"csrf": csrf})
        assert out.status_code == 303
        assert (await laptop.get("/admin/robots")).status_code == 303
        assert (await phone.get("/admin/robots")).status_code == 303
    assert Users(harness.svc.db).session_count("anna") == 0


async def test_a_deleted_admins_cookie_never_signs_in_the_next_admin(harness: RobotHarness) -> None:
    users = Users(harness.svc.db)
    boris = users.create("boris", PASSWORD)
    async with harness.client() as c:
        await sign_in(c, "boris")
        old = session_cookie(c)
    users.delete("boris")
    carla = users.create("carla", PASSWORD)
    assert carla.id > boris.id  # ids are never reused
    assert await with_cookie(harness, old) == 303


async def test_sessions_end_after_the_idle_and_the_absolute_timeout(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path, sandbox=False, settings={"admin_session_idle_seconds": 1.0}) as h:
        Users(h.svc.db).create("anna", PASSWORD)
        async with h.client() as c:
            await sign_in(c)
            await asyncio.sleep(1.3)
            assert (await c.get("/admin/robots")).status_code == 303


def test_a_session_lives_while_used_and_never_past_its_lifetime(sqlite_db: Any) -> None:
    users = Users(sqlite_db)
    anna = users.create("anna", PASSWORD)
    token = users.start_session(anna, "10.0.0.1", now=1000.0)
    for now in (1070.0, 1140.0, 1210.0):  # used every 70 s: alive with a 120 s idle timeout
        assert users.session_user(token, idle=120, lifetime=250, now=now) == anna
    assert users.session_user(token, idle=120, lifetime=250, now=1251.0) is None
    assert users.session_user(token, idle=120, lifetime=10_000, now=1252.0) is None  # the row is gone


# --- 2. the sign-in throttle ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
    else:
        yield new_pg_database(request.getfixturevalue("pg_server"), request.getfixturevalue("pg_template"))


async def test_parallel_wrong_passwords_get_at_most_the_free_checks(tmp_path: Path, database_url: str) -> None:
    async with RobotHarness(data_dir=tmp_path, database_url=database_url, sandbox=False) as h:
        Users(h.svc.db).create("anna", PASSWORD)
        async with client_from(h, "10.9.9.9") as c:
            token = csrf_of((await c.get("/admin/login")).text)

            async def attempt(i: int) -> int:
                form = {"csrf": token, "username": "anna", "password": f"guess-{i}"}
                return (await c.post("/admin/login", data=form)).status_code

            codes = await asyncio.gather(*(attempt(i) for i in range(40)))
        checked = codes.count(401)
        assert checked == FREE_FAILURES and codes.count(429) == 40 - FREE_FAILURES, codes
        failures = h.svc.audit.recent(action="sign_in.failed", limit=1000)
        assert len(failures) == FREE_FAILURES  # one audit entry per password actually checked


async def test_wrong_guesses_on_look_alike_names_do_not_lock_out_the_real_admin(harness: RobotHarness) -> None:
    Users(harness.svc.db).create("admin", PASSWORD)
    async with client_from(harness, "10.0.0.7") as own:  # the admin's browser, used before
        csrf = await sign_in(own, "admin")
        await own.post("/admin/logout", data={"csrf": csrf})
        # from elsewhere and from the admin's own address (a shared NAT, or a proxy nobody trusted)
        attacks = [("10.1.0.1", "Admin"), ("10.1.0.2", " admin"), ("10.1.0.3", "admin")]
        attacks += [("10.0.0.7", "Admin"), ("10.0.0.7", " admin"), ("10.0.0.7", "admin")]
        for address, name in attacks:
            async with client_from(harness, address) as attacker:
                token = csrf_of((await attacker.get("/admin/login")).text)
                for _ in range(FREE_FAILURES + 3):
                    form = {"csrf": token, "username": name, "password": "wrong-password"}
                    assert (await attacker.post("/admin/login", data=form)).status_code in (401, 429)
        await sign_in(own, "admin")  # at once, no waiting
    async with client_from(harness, "10.0.0.8") as fresh:  # "Admin" is not "admin": anna is untouched too
        await sign_in(fresh, "anna")


# --- 3. bounded requests ----------------------------------------------------------------------


class CountingBody(httpx.AsyncByteStream):
    """A request body that records how much of it the server pulled."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.chunks, self.size, self.sent = chunks, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.sent += self.size
            yield b"a" * self.size


async def post_stream(c: httpx.AsyncClient, path: str, body: CountingBody, **headers: str) -> httpx.Response:
    request = c.build_request("POST", path, headers=headers)
    request.stream = body
    return await c.send(request)


async def test_admin_bodies_are_refused_before_they_are_read(harness: RobotHarness) -> None:
    cap = harness.svc.settings.admin_max_body_bytes
    big = 50 * 1024 * 1024
    async with harness.client() as c:
        anonymous = CountingBody(800)  # 50 MB, multipart, nobody signed in
        resp = await post_stream(
            c, "/admin/actions/check", anonymous, **{"content-type": "multipart/form-data; boundary=x"}
        )
        assert resp.status_code == 303 and anonymous.sent <= 64 * 1024
        csrf = await sign_in(c)
        multipart = CountingBody(800)
        resp = await post_stream(
            c,
            "/admin/actions/check",
            multipart,
            **{"content-type": "multipart/form-data; boundary=x", "x-csrf-token": csrf},
        )
        assert resp.status_code == 415 and multipart.sent <= 64 * 1024
        declared = CountingBody(800)
        resp = await post_stream(
            c,
            "/admin/actions/check",
            declared,
            **{"content-type": "application/x-www-form-urlencoded", "content-length": str(big), "x-csrf-token": csrf},
        )
        assert resp.status_code == 413 and declared.sent <= 64 * 1024
        chunked = CountingBody(800)  # no length given: read only up to the cap
        resp = await post_stream(
            c,
            "/admin/actions/check",
            chunked,
            **{"content-type": "application/x-www-form-urlencoded", "x-csrf-token": csrf},
        )
        assert resp.status_code == 413 and chunked.sent <= cap + 64 * 1024
        assert "larger than" in resp.text
        ok = await c.post("/admin/actions/check", data={"source": "x = 1\n"}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/admin/journal?before=99999999999999999999999", 200),
        ("GET", "/admin/journal/rows?before=99999999999999999999999", 200),
        ("GET", "/admin/journal/99999999999999999999999", 404),
        ("GET", "/admin/journal/4294967296", 404),
        ("GET", "/admin/audit?before=99999999999999999999999", 200),
        ("GET", "/admin/robots/ui.total/diff?a=99999999999999999999999&b=1", 404),
        ("POST", "/admin/journal/99999999999999999999999/retry", 404),
        ("POST", "/admin/robots/ui.total/activate", 404),
    ],
)
async def test_huge_numbers_in_paths_and_queries_are_refused_not_a_500(
    harness: RobotHarness, method: str, path: str, expected: int
) -> None:
    async with harness.client() as c:
        csrf = await sign_in(c)
        assert (await c.post("/admin/new-robot", data=robot_form(csrf))).status_code == 303
        data = {"csrf": csrf, "number": "99999999999999999999999"} if method == "POST" else None
        resp = await c.request(method, path, data=data)
    assert resp.status_code == expected, resp.text[:300]


# --- 4. what is public ------------------------------------------------------------------------


async def test_healthz_tells_the_public_only_ok_and_operators_the_details(tmp_path: Path) -> None:
    settings = {"health_token": SecretStr("health-secret")}
    async with RobotHarness(data_dir=tmp_path, sandbox=False, settings=settings) as h:
        Users(h.svc.db).create("anna", PASSWORD)
        async with h.client() as c:
            public = await c.get("/healthz")
            assert public.status_code == 200 and public.json() == {"status": "ok"}
            wrong = await c.get("/healthz", headers={"Authorization": "Bearer nope"})
            assert "checks" not in wrong.json()
            told = await c.get("/healthz", headers={"Authorization": "Bearer health-secret"})
            assert told.json()["checks"]["database"] is True and "worker" in told.json()["checks"]
            assert "checks" not in (await c.get("/admin/health")).json()
            await sign_in(c)
            admin = await c.get("/admin/health")
            assert admin.status_code == 200 and admin.json()["checks"]["database"] is True


async def test_metrics_need_the_bearer_token_and_are_off_without_one(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path, sandbox=False) as h:
        await h.install()
        async with h.client() as c:
            off = await c.get("/metrics")
            assert off.status_code == 404 and "B24R_METRICS_TOKEN" in off.json()["reason"]
            assert h.portal.domain not in off.text
    async with RobotHarness(data_dir=tmp_path / "2", sandbox=False, settings={"metrics_token": "scrape"}) as h:
        await h.install()
        async with h.client() as c:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape"}):
                refused = await c.get("/metrics", headers=headers)
                assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
                assert h.portal.domain not in refused.text
            ok = await c.get("/metrics", headers={"Authorization": "Bearer scrape"})
            assert ok.status_code == 200 and "b24robots_queue_depth" in ok.text


async def test_the_api_docs_can_be_turned_off(tmp_path: Path) -> None:
    async with RobotHarness(data_dir=tmp_path, sandbox=False) as h, h.client() as c:
        assert (await c.get("/openapi.json")).status_code == 200
        assert (await c.get("/docs")).status_code == 200
    async with RobotHarness(data_dir=tmp_path / "2", sandbox=False, settings={"api_docs": False}) as h, h.client() as c:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert (await c.get(path)).status_code == 404, path
        assert (await c.get("/healthz")).status_code == 200


# --- 5. files ---------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_data_directory_and_database_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    async with RobotHarness(data_dir=data, sandbox=False) as h:
        Users(h.svc.db).create("anna", PASSWORD)  # a write: the WAL and SHM files exist now
        db = data / "b24robots.db"
        assert mode(data) == 0o700
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert path.exists() and mode(path) == 0o600, path
    old = tmp_path / "old"  # left readable by an older version: tightened at start
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    (old / "b24robots.db").touch()
    os.chmod(old / "b24robots.db", 0o644)
    async with RobotHarness(data_dir=old, sandbox=False):
        assert mode(old) == 0o700 and mode(old / "b24robots.db") == 0o600


# --- 6. the audit log -------------------------------------------------------------------------


async def test_the_audit_log_records_who_did_what_from_where_and_outlives_the_user(harness: RobotHarness) -> None:
    users = Users(harness.svc.db)
    users.create("boris", PASSWORD, actor="cli:root")
    async with client_from(harness, "10.2.0.1") as c:
        page = await c.get("/admin/login")
        await c.post("/admin/login", data={"csrf": csrf_of(page.text), "username": "boris", "password": "nope"})
        csrf = await sign_in(c, "boris")
        assert (await c.post("/admin/new-robot", data=robot_form(csrf))).status_code == 303
        edited = robot_form(csrf, comment="second", **{"out.0.name": "Sum"})
        assert (await c.post("/admin/robots/ui.total", data=edited)).status_code == 303
        resp = await c.post("/admin/robots/ui.total/activate", data={"csrf": csrf, "number": "1", "confirmed": "1"})
        assert resp.status_code == 303
    users.delete("boris", actor="cli:root")
    entries = {e.action: e for e in reversed(Audit(harness.svc.db).recent(limit=100))}  # the newest of each
    assert entries["user.create"].actor == "cli:root" and entries["user.create"].target == "boris"
    assert entries["sign_in.failed"].target == "boris" and entries["sign_in.failed"].address == "10.2.0.1"
    assert entries["sign_in.password"].actor == "boris" and entries["sign_in.password"].address == "10.2.0.1"
    assert entries["robot.save"].actor == "boris" and entries["robot.save"].target == "ui.total"
    assert entries["robot.activate"].details == {"version": 1}
    assert entries["user.delete"].target == "boris"
    async with harness.client() as c:
        await sign_in(c)
        page = await c.get("/admin/audit")
        assert page.status_code == 200
        for text in ("robot.activate", "ui.total", "10.2.0.1", "cli:root", "boris"):
            assert text in page.text
        only = await c.get("/admin/audit?kind=robot.")
        assert "robot.save" in only.text and "sign_in.failed" not in only.text
        ru = await c.get("/admin/audit", headers={"Accept-Language": "ru"})
        assert "Журнал аудита" in ru.text


async def test_retries_and_replays_are_audited(harness: RobotHarness) -> None:
    from b24robots.store.journal import NewInvocation

    inst = harness.svc.installations.all()[0]
    new = NewInvocation(
        event_token="tok-audit", installation_id=inst.id, robot_code="x.y", origin="unknown",
        robot_version_id=None, workflow_id="w", document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"], use_subscription=False, timeout_duration=0,
        portal_ts=0, auth_user_id=None, properties={}, inputs=None,
    )  # fmt: skip
    inv_id, _ = harness.svc.journal.enqueue_dead(new, error="no robot", log_message="", outputs={})
    async with client_from(harness, "10.3.0.1") as c:
        csrf = await sign_in(c)
        assert (await c.post(f"/admin/journal/{inv_id}/replay", data={"csrf": csrf})).status_code == 303
        assert (await c.post(f"/admin/journal/{inv_id}/retry", data={"csrf": csrf})).status_code == 303
    actions = [(e.action, e.target, e.actor, e.address) for e in harness.svc.audit.recent(action="journal.")]
    assert ("journal.replay", str(inv_id), "anna", "10.3.0.1") in actions
    assert ("journal.retry", str(inv_id), "anna", "10.3.0.1") in actions


def test_audit_entries_of_any_caller(sqlite_db: Any) -> None:
    audit = Audit(sqlite_db)
    audit.record("connection.create", actor="anna", target="crm-db", address="10.0.0.1", details={"kind": "sql"})
    audit.record("apikey.revoke", actor="anna", target="key-3")
    assert [e.action for e in audit.recent()] == ["apikey.revoke", "connection.create"]
    assert [e.target for e in audit.recent(action="connection.")] == ["crm-db"]
    assert audit.recent(before_id=10**30) and not audit.recent(before_id=1)
