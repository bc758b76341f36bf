"""Outbound calls in the journal on SQLite and PostgreSQL: stored once per key, owed, never run by workers."""

from __future__ import annotations

import pytest

from b24robots.errors import StoreError
from b24robots.store.db import Database
from b24robots.store.journal import DEAD, Journal, NewCall, call_status
from tests.test_store_journal import install


def call(installation_id: int, key: str, fp: str = "f") -> NewCall:
    return NewCall(
        key=key,
        installation_id=installation_id,
        method="crm.automation.trigger.execute",
        params={"CODE": "pay", "OWNER_TYPE_ID": 2, "OWNER_ID": 1},
        label="pay",
        origin="api",
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        fingerprint=fp,
    )


def test_a_call_is_stored_once_per_key_and_owed_at_once(db: Database) -> None:
    j = Journal(db)
    inst = install(db)
    first, created = j.enqueue_call(call(inst, "1:k"))
    again, created_again = j.enqueue_call(call(inst, "1:k", fp="other"))
    assert created and not created_again and again.id == first.id and again.properties["fingerprint"] == "f"
    assert first.kind == "call" and first.owed and call_status(first) == "pending"
    assert j.claim("w", 10, 30.0) == []  # workers never take a call
    assert [i.id for i in j.claim_deliveries(inst, "s", limit=10, lease=30.0)] == [first.id]
    assert [c.id for c in j.list_calls(key="1:k")] == [first.id] and j.list_calls(key="1:x") == []


def test_a_failed_call_is_owed_again_on_retry_and_cannot_be_replayed(db: Database) -> None:
    j = Journal(db)
    inst = install(db)
    entry, _ = j.enqueue_call(call(inst, "1:k"))
    j.claim_deliveries(inst, "s", limit=10, lease=30.0)
    j.delivery_failed(
        [entry.id], "s", error="Trigger with code pay is not registered.", delay=1, give_up_seconds=3600, final=True
    )
    dead = j.get(entry.id)
    assert dead.state == DEAD and call_status(dead) == "failed" and "not registered" in dead.error
    back = j.retry(entry.id)
    assert back.owed and call_status(back) == "pending" and j.claim("w", 10, 30.0) == []
    with pytest.raises(StoreError, match="fire it again"):
        j.replay(entry.id)
    j.claim_deliveries(inst, "s", limit=10, lease=30.0)
    j.call_results({entry.id: True})
    j.delivered([entry.id], "s")
    done = j.get(entry.id)
    assert call_status(done) == "delivered" and done.outputs == {"result": True}
