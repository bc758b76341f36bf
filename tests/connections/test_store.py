"""The connections store on SQLite and PostgreSQL: global and per-portal values, secrets encrypted at rest."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from b24robots.connections.base import CallRecord
from b24robots.errors import ConfigError, NotFound
from b24robots.store.connections import ConnectionStore
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.journal import Journal
from tests.connections.support import SECRET
from tests.test_store_journal import install, new


@pytest.fixture
def store(db: Database) -> ConnectionStore:
    return ConnectionStore(db, Vault(b"test-key"))


def test_per_portal_values_override_the_global_ones(store: ConnectionStore) -> None:
    store.add("buh", "1c", {"username": "odata", "concurrency": "3"}, {"password": SECRET})
    assert store.resolve("buh", "m1") is not None
    store.add("buh", "1c", {"base_url": "https://one.example/b1/odata/standard.odata"}, member_id="m1")
    store.set(
        "buh", {"base_url": "https://two.example/b2/odata/standard.odata/"}, {"password": "other-pass"}, member_id="m2"
    )
    one, two, none = store.resolve("buh", "m1"), store.resolve("buh", "m2"), store.resolve("buh", "m3")
    assert one and two and none
    assert one.get("base_url") == "https://one.example/b1/odata/standard.odata/" and one.secret("password") == SECRET
    assert two.get("base_url").startswith("https://two.example") and two.secret("password") == "other-pass"
    assert one.get("concurrency") == 3 and one.portal == "m1"
    assert none.settings.get("base_url") is None and none.portal == ""
    assert store.resolve("nope", "m1") is None


def test_secrets_are_encrypted_at_rest_and_never_listed(store: ConnectionStore, db: Database) -> None:
    store.add("erp", "http", {"base_url": "https://erp.example/api", "auth": "bearer"}, {"token": SECRET})
    with db.read() as s:
        raw = " ".join(str(v) for row in s.execute(text("select * from connections")) for v in row)
    assert SECRET not in raw and "https://erp.example/api/" in raw
    info = store.get("erp")
    assert info.secrets_set == ("token",) and info.shown["token"] == "********"
    assert SECRET not in repr(store.all()) and SECRET not in repr(info)
    # a blank secret keeps the stored one; clear removes it
    store.set("erp", {"timeout": "5"}, {"token": ""})
    resolved = store.resolve("erp", "")
    assert resolved and resolved.secret("token") == SECRET and resolved.get("timeout") == 5.0
    store.set("erp", {}, clear=["token"])
    resolved = store.resolve("erp", "")
    assert resolved and resolved.secret("token") == ""


def test_bad_values_are_clear_errors(store: ConnectionStore) -> None:
    with pytest.raises(ConfigError, match="kind 'ftp' is unknown"):
        store.add("x", "ftp", {})
    with pytest.raises(ConfigError, match="name 'Bad Name' is invalid"):
        store.add("Bad Name", "http", {})
    with pytest.raises(ConfigError, match="setting 'port' is unknown"):
        store.add("x", "http", {"port": 1})
    with pytest.raises(ConfigError, match="not an absolute http"):
        store.add("x", "http", {"base_url": "ftp://x"})
    with pytest.raises(ConfigError, match="user name and password in their own fields"):
        store.add("x", "http", {"base_url": f"https://u:{SECRET}@x.example/"})
    with pytest.raises(ConfigError, match="'timeout'"):
        store.add("x", "http", {"timeout": "soon"})
    with pytest.raises(ConfigError, match="auth 'magic' is unknown"):
        store.add("x", "http", {"auth": "magic"})
    with pytest.raises(ConfigError, match="secret 'token' is unknown for a 1c"):
        store.add("x", "1c", {}, {"token": "t"})
    store.add("x", "http", {})
    with pytest.raises(ConfigError, match="already exists"):
        store.add("x", "http", {})
    with pytest.raises(ConfigError, match="does not exist; add it without --portal"):
        store.add("y", "http", {}, member_id="m1")
    with pytest.raises(NotFound):
        store.set("y", {})


def test_remove_refuses_a_connection_in_use(store: ConnectionStore) -> None:
    store.add("dwh", "sql", {"url": "sqlite:///x.db"})
    store.set("dwh", {"row_limit": "10"}, member_id="m1")
    with pytest.raises(ConfigError, match=r"used by robot\(s\) demo\.lookup"):
        store.remove("dwh", users=["demo.lookup"])
    store.remove("dwh", member_id="m1", users=["demo.lookup"])  # a portal's override may go
    assert [i.member_id for i in store.all()] == [""]
    store.remove("dwh")
    assert store.all() == []
    with pytest.raises(NotFound):
        store.remove("dwh")


def test_calls_are_journaled_per_invocation(store: ConnectionStore, db: Database) -> None:
    inv_id, _ = Journal(db).enqueue(new(install(db), "tok-1"))
    store.record_calls(inv_id, [CallRecord("erp", "http", "GET", "/api/x", 200, 1.5, 10)])
    store.record_calls(None, [CallRecord("erp", "http", "GET", "/api/y", 200, 1.5, 10)])  # a test run: not kept
    calls = store.calls_for(inv_id)
    assert [(c.connection, c.target, c.status) for c in calls] == [("erp", "/api/x", 200)]
