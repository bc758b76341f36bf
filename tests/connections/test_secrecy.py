"""The secrecy sweep: robots use every kind of connection with known secrets, then everything is searched.

A module robot and a stored robot call an HTTP API (a bearer token, an API key in the query, OAuth2
client credentials), a 1C infobase (basic auth, per-portal values) and PostgreSQL (a password in the
URL); some calls fail, and the far side repeats the credentials in its error answer. Afterwards the
secrets (and the OAuth2 token the server fetched) are looked for in: the server's log records, the
journal rows, the outbound-call rows, the workflow logs and return values sent to the portal, every
admin page reachable by link from the robot list, the editor's test-run answers, /metrics, the raw
database file, and the sandbox's view: every frame the parent sent to a sandbox child and what the
stored code could see and return. The far sides confirm the secrets were really used.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from b24robots import Params, RobotContext, Router, String
from b24robots.errors import ConnectionCallError
from b24robots.robots.spec import RobotSpec
from b24robots.sandbox import _wire
from b24robots.store.users import Users
from b24robots.testing import FakeOneCServer
from b24robots.testing.app_fixtures import RobotHarness
from tests.connections.support import SECRET, echo_server
from tests.pgserver import PostgresServer
from tests.ui_helpers import csrf_of, sign_in

pytestmark = pytest.mark.postgres

HTTP_TOKEN = "Bearer-Tok-5ecret-7a6b5c"
QUERY_KEY = "Query-Key-5ecret-1d2e3f"
ONEC_PASSWORD = "1C-Pa55-5ecret-Ромашка"
SQL_PASSWORD = "Sql-Pa55-5ecret-0a9b8c"
OAUTH_TOKEN = re.compile(r"tok-\d+-s3cr")  # what the echo app's token endpoint hands out
SECRETS = (HTTP_TOKEN, QUERY_KEY, SECRET, ONEC_PASSWORD, SQL_PASSWORD)
USED = ["erp", "erp-q", "erp-oauth", "buh", "dwh"]
# (connection, a path that answers without repeating the request, a path whose error repeats it)
HTTP_CALLS = (("erp", "quiet", "reflect"), ("erp-q", "status/200", "reflect"), ("erp-oauth", "quiet", "reflect"))

router = Router()


class SweepIn(Params):
    inn = String("INN", required=True)
    fail = String("Fail at the end")


class SweepOut(Params):
    seen = String("Seen")


@router.robot("sweep.module", name="Sweep (module)", inputs=SweepIn, outputs=SweepOut, connections=USED)
def sweep_module(inputs: SweepIn, ctx: RobotContext) -> SweepOut:
    seen: dict[str, Any] = {}
    for name, good, bad in HTTP_CALLS:
        answer = ctx.http(name).get(good, params={"inn": inputs.inn})
        seen[name] = [answer.status, answer.text, repr(answer), repr(ctx.http(name))]
        try:
            ctx.http(name).get(bad)
        except ConnectionCallError as exc:
            ctx.log(f"caught: {exc}")
            seen[name].append(repr(exc))
    seen["buh"] = ctx.onec("buh").list("Catalog_Контрагенты", top=5)
    try:
        ctx.onec("buh").list("Catalog_Нет")
    except ConnectionCallError as exc:
        ctx.log(f"caught: {exc}")
    seen["dwh"] = ctx.sql("dwh").query("select name from counterparties order by id")
    try:
        ctx.sql("dwh").query("select * from nowhere")
    except ConnectionCallError as exc:
        ctx.log(f"caught: {exc}")
    if inputs.fail == "Y":
        ctx.http("erp").get("reflect")  # uncaught: the run ends with the error in the log and journal
    return SweepOut(seen=json.dumps(seen, ensure_ascii=False, default=str))


STORED_SOURCE = """
import json

CALLS = HTTP_CALLS


def run(inputs, ctx):
    seen = {"ctx": repr(ctx), "fields": {k: repr(getattr(ctx, k)) for k in dir(ctx) if not k.startswith("_")}}
    for name, good, bad in CALLS:
        api = ctx.http(name)
        answer = api.get(good, params={"inn": inputs["inn"]})
        seen[name] = [repr(api), dir(api), answer.status, answer.headers, answer.text, repr(answer), dir(answer)]
        try:
            api.get(bad)
        except ctx.ConnectionError as exc:
            ctx.log("caught: " + str(exc))
            seen[name] += [str(exc), repr(exc), exc.code, exc.status, dir(exc)]
    buh = ctx.onec("buh")
    seen["buh"] = [repr(buh), dir(buh), buh.list("Catalog_Контрагенты", top=5)]
    try:
        buh.list("Catalog_Нет")
    except ctx.ConnectionError as exc:
        ctx.log("caught: " + str(exc))
        seen["buh"] += [str(exc), repr(exc)]
    dwh = ctx.sql("dwh")
    seen["dwh"] = [repr(dwh), dir(dwh), dwh.query("select name from counterparties order by id")]
    try:
        dwh.query("select * from nowhere")
    except ctx.ConnectionError as exc:
        ctx.log("caught: " + str(exc))
        seen["dwh"] += [str(exc), repr(exc)]
    if inputs["fail"] == "Y":
        ctx.http("erp").get("reflect")
    return {"seen": json.dumps(seen, ensure_ascii=False, default=str)}
""".replace("CALLS = HTTP_CALLS", f"CALLS = {HTTP_CALLS!r}")
STORED = RobotSpec.from_document(
    {
        "code": "sweep.stored",
        "name": "Sweep (stored)",
        "connections": USED,
        "properties": {
            "inn": {"name": "INN", "required": "Y"},
            "fail": {"name": "Fail at the end"},
        },
        "return_properties": {"seen": {"name": "Seen"}},
    }
)


class Frames:
    """Every frame the parent sends to a sandbox child (the job, and each answer to a request)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[bytes] = []
        send, send_raw = _wire.send, _wire.send_raw

        def spy_send(sock: Any, message: dict[str, Any]) -> None:
            self.sent.append(_wire.dumps(message))
            send(sock, message)

        def spy_send_raw(sock: Any, payload: bytes) -> None:
            self.sent.append(payload)
            send_raw(sock, payload)

        monkeypatch.setattr(_wire, "send", spy_send)
        monkeypatch.setattr(_wire, "send_raw", spy_send_raw)

    def text(self) -> str:
        return "\n".join(f.decode("utf-8", "replace") for f in self.sent)


@pytest.fixture
def dwh(pg_server: PostgresServer, tmp_path: Path) -> str:
    """A PostgreSQL database with counterparties; its URL carries SQL_PASSWORD (trust auth ignores it)."""
    name = f"sweep_{abs(hash(str(tmp_path))) % 10**8}"
    with psycopg.connect(pg_server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(pg_server.url(name).replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("create table counterparties (id integer primary key, name text)")
        conn.execute("insert into counterparties values (1, 'ООО Ромашка')")
    return pg_server.url(name).replace("postgres@", f"postgres:{SQL_PASSWORD}@")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(router, data_dir=tmp_path / "srv") as h:
        h.svc.runner.rules = type(h.svc.runner.rules)(max_attempts=1)
        Users(h.svc.db).create("anna", "correct horse battery")
        yield h


async def crawl(client: Any, start: str, limit: int = 300) -> dict[str, str]:
    """Every admin page reachable by link from `start` (GET only), as {path: body}."""
    pages: dict[str, str] = {}
    todo = [start]
    while todo and len(pages) < limit:
        path = todo.pop(0).replace("&amp;", "&")
        if path in pages:
            continue
        answer = await client.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        pages[path] = answer.text
        for link in re.findall(r'href="(/admin/[^"#]*)"', answer.text):
            link = link.replace("&amp;", "&")
            if not link.startswith(("/admin/static/", "/admin/lang/")) and link not in pages:
                todo.append(link)
    return pages


async def test_no_secret_reaches_a_log_a_row_a_page_or_the_sandbox(
    harness: RobotHarness,
    b24_onec: FakeOneCServer,
    dwh: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    for noisy in ("httpx", "httpcore"):  # as the server's logging setup has them (b24robots/logs.py)
        caplog.set_level(logging.WARNING, logger=noisy)
    frames = Frames(monkeypatch)
    b24_onec.fake.password = ONEC_PASSWORD
    b24_onec.fake.add("Catalog_Контрагенты", Description="ООО Ромашка", ИНН="7701234567")
    store = harness.svc.connections
    member = harness.portal.member_id
    with echo_server() as (server, state):
        api = server.origin + "/api/"
        store.add("erp", "http", {"base_url": api, "auth": "bearer", "log_bodies": True}, {"token": HTTP_TOKEN})
        store.add("erp-q", "http", {"base_url": api, "auth": "query", "log_bodies": True}, {"api_key": QUERY_KEY})
        oauth = {"base_url": api, "auth": "oauth2", "token_url": server.origin + "/oauth/token", "client_id": "robot"}
        store.add("erp-oauth", "http", oauth, {"client_secret": SECRET})
        store.add("buh", "1c", {"base_url": b24_onec.base_url, "username": b24_onec.fake.username}, {})
        store.set("buh", {}, {"password": ONEC_PASSWORD})
        store.set("buh", {"base_url": b24_onec.base_url}, {"password": ONEC_PASSWORD}, member_id=member)
        store.add("dwh", "sql", {"url": dwh})
        harness.svc.register.save(STORED, STORED_SOURCE, author="anna")
        await harness.install()

        runs = []
        for code in ("sweep.module", "sweep.stored"):
            for fail in ("N", "Y"):
                props = {"inn": "7701234567", "fail": fail}
                runs.append(await harness.run_robot(code, properties=props, timeout=30))
        async with harness.client() as client:
            csrf = await sign_in(client)
            tested = []
            for code in ("sweep.module", "sweep.stored"):
                form = {"csrf": csrf, "input.inn": "7701234567", "input.fail": "N"}
                answer = await client.post(f"/admin/robots/{code}/test-run", data=form)
                assert answer.status_code == 200 and "test-outcome" in answer.text
                tested.append(answer.text)
            pages = await crawl(client, "/admin/robots")
            csrf_of(pages["/admin/robots"])
        # the far sides got the secrets: the sweep below is not vacuous
        auths = {s["headers"].get("authorization", "") for s in state.seen}
        assert f"Bearer {HTTP_TOKEN}" in auths and any(OAUTH_TOKEN.search(a) for a in auths)
        assert state.token_calls >= 1
        assert any(s["path"] == "/api/status/200" and s["query"].get("api_key") == QUERY_KEY for s in state.seen)
        assert b24_onec.fake.seen and all(r.user == b24_onec.fake.username for r in b24_onec.fake.seen)

    stored_ok = json.loads(runs[2].return_values["seen"])
    assert stored_ok["erp"][2] == 200 and "********" in json.dumps(stored_ok["erp"])  # the reflected token, masked
    assert stored_ok["dwh"][2] == [{"name": "ООО Ромашка"}] and stored_ok["buh"][2]
    journal = harness.svc.journal.recent(limit=1000)
    assert [i.state for i in journal].count("dead") == 2  # the two runs that failed at the end
    dead = [i for i in journal if i.state == "dead"]
    assert all("GET /api/reflect answered 400" in i.error for i in dead)
    call_rows = [c for inv in journal for c in harness.svc.connections.calls_for(inv.id)]
    assert len(call_rows) >= 4 * 10 and any(c.response_body for c in call_rows)
    assert any(p.startswith("/admin/journal/") and p[len("/admin/journal/") :].isdigit() for p in pages)
    assert any(p.startswith("/admin/connections/") for p in pages) and "/admin/audit" in pages

    db_file = harness.data_dir / "b24robots.db"
    raw_db = b"".join(p.read_bytes() for p in db_file.parent.glob("b24robots.db*"))
    places: dict[str, str] = {
        "server log": caplog.text,
        "journal rows": json.dumps([i.__dict__ for i in journal], default=str, ensure_ascii=False),
        "outbound-call rows": json.dumps([c.__dict__ for c in call_rows], default=str, ensure_ascii=False),
        "workflow logs and return values": json.dumps(
            [[e.message for e in wf.log] + [wf.return_values] for wf in runs], default=str, ensure_ascii=False
        ),
        "editor test runs": "\n".join(tested),
        "admin pages": "\n".join(pages.values()),
        "/metrics": harness.svc.metrics.render().decode(),
        "the sandbox's frames": frames.text(),
        "what stored code returned": json.dumps(stored_ok, ensure_ascii=False),
        "database file": raw_db.decode("utf-8", "replace"),
    }
    assert frames.sent and len(pages) >= 15
    for where, text in places.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in {where}"
        assert not OAUTH_TOKEN.search(text), f"the OAuth2 token in {where}"
