"""The 1c kind against the fake 1C OData server over real HTTP (shapes from the 1C Developer Guide 17.4)."""

from __future__ import annotations

import pytest

from b24robots.connections.hub import ConnectionHub
from b24robots.connections.onec import build_filter, key_text, literal
from b24robots.errors import ConfigError, ConnectionCallError, RemoteError
from b24robots.testing import FakeOneCServer
from tests.connections.support import MemorySource, config, dumps

INN = "7701234567"


def onec(server: FakeOneCServer, password: str | None = None):  # type: ignore[no-untyped-def]
    cfg = config(
        "1c",
        name="buh",
        base_url=server.base_url,
        username=server.fake.username,
        secrets={"password": password or server.fake.password},
    )
    hub = ConnectionHub(MemorySource(cfg))
    run = hub.scope(robot="t", declared=["buh"], member_id="m1")
    return hub, run


def test_list_filter_select_top_with_cyrillic_names(b24_onec: FakeOneCServer) -> None:
    fake = b24_onec.fake
    fake.add("Catalog_Контрагенты", Description="ООО Ромашка", ИНН=INN)
    fake.add("Catalog_Контрагенты", Description="ИП Васильков", ИНН="500100732259")
    hub, run = onec(b24_onec)
    api = run.onec("buh")
    rows = api.list("Catalog_Контрагенты", filter={"ИНН": INN}, select=["Ref_Key", "Description"], top=10)
    assert rows == [{"Ref_Key": rows[0]["Ref_Key"], "Description": "ООО Ромашка"}]
    seen = fake.seen[-1]
    assert seen.path == "/demo/odata/standard.odata/Catalog_Контрагенты"
    assert seen.query == {
        "$format": "json",
        "$filter": f"ИНН eq '{INN}'",
        "$select": "Ref_Key,Description",
        "$top": "10",
    }
    assert seen.user == "odata"
    both = api.list(
        "Catalog_Контрагенты",
        filter="substringof('ва', Description) or ИНН eq '7701234567'",
        orderby="Description desc",
    )
    assert [r["Description"] for r in both] == ["ООО Ромашка", "ИП Васильков"]
    assert api.first("Catalog_Контрагенты", filter={"ИНН": "none"}) is None
    hub.close()


def test_get_create_update_delete_and_post_a_document(b24_onec: FakeOneCServer) -> None:
    fake = b24_onec.fake
    hub, run = onec(b24_onec)
    api = run.onec("buh")
    created = api.create("Catalog_Контрагенты", {"Description": "АО Лютик", "ИНН": "7800000000"})
    ref = created["Ref_Key"]
    assert "odata.metadata" not in created
    assert api.get("Catalog_Контрагенты", ref)["Description"] == "АО Лютик"
    assert fake.seen[-1].path.endswith(f"Catalog_Контрагенты(guid'{ref}')")
    assert api.update("Catalog_Контрагенты", ref, {"Description": "АО Лютик и К"})["Description"] == "АО Лютик и К"
    order = api.create("Document_ЗаказКлиента", {"Контрагент_Key": ref, "СуммаДокумента": 1200.5})
    api.post_document("Document_ЗаказКлиента", order["Ref_Key"])
    assert fake.entities["Document_ЗаказКлиента"][order["Ref_Key"]]["Posted"] is True
    assert fake.seen[-1].method == "POST" and fake.seen[-1].path.endswith(")/Post")
    assert fake.seen[-1].query["PostingModeOperational"] == "false"
    api.unpost_document("Document_ЗаказКлиента", order["Ref_Key"])
    assert fake.entities["Document_ЗаказКлиента"][order["Ref_Key"]]["Posted"] is False
    api.delete("Catalog_Контрагенты", ref)
    assert ref not in fake.entities["Catalog_Контрагенты"]
    assert [r.method for r in run.records] == ["POST", "GET", "PATCH", "POST", "POST", "POST", "DELETE"]
    hub.close()


def test_1c_errors_become_clear_messages(b24_onec: FakeOneCServer) -> None:
    fake = b24_onec.fake
    fake.add("Catalog_Контрагенты", Description="x")
    hub, run = onec(b24_onec)
    api = run.onec("buh")
    with pytest.raises(RemoteError, match=r"answered 404: 1C error 9: Объект не найден") as err:
        api.get("Catalog_Контрагенты", "00000000-0000-0000-0000-000000000000")
    assert err.value.status == 404
    fake.fail_next(500, "-1", "Произошла внутренняя ошибка OData сервиса")
    with pytest.raises(RemoteError, match="1C error -1: Произошла внутренняя ошибка OData сервиса"):
        api.list("Catalog_Контрагенты")
    with pytest.raises(RemoteError, match="1C error 14"):
        api.list("Catalog_Контрагенты", filter="Description zz 'x'")
    with pytest.raises(ConnectionCallError, match="not a 1C entity set"):
        api.list("Контрагенты")
    with pytest.raises(ConnectionCallError, match="not a GUID"):
        api.get("Catalog_Контрагенты", "42")
    with pytest.raises(ConnectionCallError, match="only Document_"):
        api.post_document("Catalog_Контрагенты", "00000000-0000-0000-0000-000000000000")
    hub.close()


def test_wrong_password_is_a_401_without_the_password(b24_onec: FakeOneCServer) -> None:
    hub, run = onec(b24_onec, password="wrong-password-123")
    with pytest.raises(RemoteError, match="answered 401") as err:
        run.onec("buh").list("Catalog_Контрагенты")
    assert "wrong-password-123" not in str(err.value) and "wrong-password-123" not in dumps(run.records)
    hub.close()


def test_test_button_reads_metadata(b24_onec: FakeOneCServer) -> None:
    b24_onec.fake.add("Catalog_Номенклатура", Description="Пальто")
    cfg = config("1c", name="buh", base_url=b24_onec.base_url, username="odata", secrets={"password": "odata-secret"})
    hub = ConnectionHub(MemorySource(cfg))
    assert hub.test(cfg) == "$metadata answered with 1 entity set(s)"
    hub.close()


def test_literals_filters_and_keys() -> None:
    guid = "3ca886b6-aabd-11e7-1a8d-021c5dd9fc20"
    assert literal("O'Brien") == "'O''Brien'"
    assert literal(guid, "Контрагент_Key") == f"guid'{guid}'"
    assert literal(True) == "true" and literal(3) == "3" and literal(None) == "null"
    assert build_filter({"ИНН": "1", "Posted": True}) == "ИНН eq '1' and Posted eq true"
    assert key_text(guid) == f"(guid'{guid}')"
    assert key_text({"Recorder_Key": guid, "LineNumber": 1}) == f"(Recorder_Key=guid'{guid}', LineNumber=1)"


def test_a_1c_base_url_must_be_the_odata_root() -> None:
    with pytest.raises(ConfigError, match=r"standard\.odata"):
        config("1c", base_url="https://1c.example/base/")
