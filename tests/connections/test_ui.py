"""The Connections page over HTTP: add per kind, per-portal values, test, delete refused in use, secrets masked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from b24robots import Params, RobotContext, Router, String
from b24robots.store.users import Users
from b24robots.testing import FakeOneCServer
from b24robots.testing.app_fixtures import RobotHarness
from tests.connections.support import SECRET
from tests.ui_helpers import PASSWORD, csrf_of, robot_form, sign_in

router = Router()


class Out(Params):
    name = String("Name")


@router.robot("ui.uses_buh", name="Uses buh", outputs=Out, connections=["buh"])
def uses_buh(ctx: RobotContext) -> Out:
    row = ctx.onec("buh").first("Catalog_Контрагенты")
    return Out(name=row["Description"] if row else "")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RobotHarness]:
    async with RobotHarness(router, data_dir=tmp_path / "srv") as h:
        await h.install()
        Users(h.svc.db).create("anna", PASSWORD)
        yield h


@pytest.fixture
async def client(harness: RobotHarness) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with harness.client() as c:
        yield c, await sign_in(c)


async def test_add_test_edit_and_delete_a_1c_connection(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str], b24_onec: FakeOneCServer
) -> None:
    c, csrf = client
    b24_onec.fake.password = SECRET
    b24_onec.fake.add("Catalog_Контрагенты", Description="ООО Ромашка")
    form = await c.get("/admin/connections/new", params={"kind": "1c"})
    assert form.status_code == 200 and 'name="set.base_url"' in form.text and 'name="secret.password"' in form.text
    saved = await c.post(
        "/admin/connections",
        data={
            "csrf": csrf, "kind": "1c", "name": "buh", "portal": "",
            "set.username": "odata", "secret.password": SECRET,
        },
    )  # fmt: skip
    assert saved.status_code == 303
    # the base URL comes per portal
    member = harness.portal.member_id
    per_portal = await c.post(
        "/admin/connections/buh", data={"csrf": csrf, "portal": member, "set.base_url": b24_onec.base_url}
    )
    assert per_portal.status_code == 303
    listing = await c.get("/admin/connections")
    assert "buh" in listing.text and harness.portal.domain in listing.text and "ui.uses_buh" in listing.text
    assert "password=********" in listing.text
    tested = await c.post("/admin/connections/buh/test", data={"csrf": csrf, "portal": member})
    assert tested.status_code == 303
    after = await c.get("/admin/connections")
    assert "buh works: $metadata answered with 1 entity set(s)" in after.text
    untested = await c.post("/admin/connections/buh/test", data={"csrf": csrf, "portal": ""})
    assert untested.status_code == 303
    assert "has no value for base_url" in (await c.get("/admin/connections")).text
    # editing shows that a secret is set, never its value
    edit = await c.get("/admin/connections/buh")
    assert 'placeholder="********"' in edit.text and SECRET not in edit.text
    # a robot declares it: deleting is refused; a portal's values may go
    refused = await c.post("/admin/connections/buh/delete", data={"csrf": csrf, "portal": ""})
    assert refused.status_code == 303
    assert "used by robot(s) ui.uses_buh" in (await c.get("/admin/connections")).text
    await c.post("/admin/connections/buh/delete", data={"csrf": csrf, "portal": member})
    assert [i.member_id for i in harness.svc.connections.all()] == [""]
    # the run uses it; the journal entry lists the call; no page holds the secret
    harness.svc.connections.set("buh", {"base_url": b24_onec.base_url})
    wf = await harness.run_robot("ui.uses_buh")
    assert wf.return_values["name"] == "ООО Ромашка"
    inv = harness.svc.journal.recent(robot="ui.uses_buh")[0]
    detail = await c.get(f"/admin/journal/{inv.id}")
    assert 'id="connection-calls"' in detail.text and "/demo/odata/standard.odata/Catalog_Контрагенты" in detail.text
    module = await c.get("/admin/robots/ui.uses_buh")
    assert 'id="robot-connections"' in module.text
    for page in ("/admin/connections", "/admin/connections/buh", f"/admin/journal/{inv.id}", "/admin/journal"):
        assert SECRET not in (await c.get(page)).text, page
    assert SECRET not in harness.svc.metrics.render().decode()


async def test_bad_values_keep_the_form_with_a_reason(client: tuple[httpx.AsyncClient, str]) -> None:
    c, csrf = client
    bad = await c.post(
        "/admin/connections",
        data={
            "csrf": csrf,
            "kind": "http",
            "name": "erp",
            "portal": "",
            "set.base_url": "ftp://x",
            "secret.token": SECRET,
        },
    )
    assert bad.status_code == 400 and "not an absolute http(s) URL" in bad.text
    assert 'value="ftp://x"' in bad.text and SECRET not in bad.text
    bad_name = await c.post("/admin/connections", data={"csrf": csrf, "kind": "http", "name": "Bad Name", "portal": ""})
    assert bad_name.status_code == 400 and "is invalid" in bad_name.text
    missing = await c.get("/admin/connections/ghost")
    assert missing.status_code == 404


async def test_a_stored_robot_declares_connections_in_the_editor(
    harness: RobotHarness, client: tuple[httpx.AsyncClient, str], tmp_path: Path
) -> None:
    import sqlite3

    c, csrf = client
    with sqlite3.connect(tmp_path / "dwh.db") as conn:
        conn.execute("create table cp (inn text, name text)")
        conn.execute("insert into cp values ('7701234567', 'ООО Ромашка')")
    harness.svc.connections.add("dwh", "sql", {"url": f"sqlite:///{tmp_path / 'dwh.db'}"})
    source = "def run(inputs, ctx):\n    return {'total': 1}\n"
    bad = await c.post("/admin/new-robot", data=robot_form(csrf, connections="Bad!", source=source))
    assert bad.status_code == 422 and "connection name &#39;Bad!&#39; is invalid" in bad.text
    saved = await c.post("/admin/new-robot", data=robot_form(csrf, connections="dwh", source=source))
    assert saved.status_code == 303, saved.text
    stored = harness.svc.registry.resolve("ui.total")
    assert stored is not None and stored.spec.connections == ("dwh",)
    page = await c.get("/admin/robots/ui.total")
    assert 'value="dwh"' in page.text
    assert csrf_of(page.text)
