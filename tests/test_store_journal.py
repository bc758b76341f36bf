"""The journal-queue on SQLite and PostgreSQL: claims, leases, retries, delivery bookkeeping."""

from __future__ import annotations

import time

import pytest

from b24robots.errors import NotFound, StoreError
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installations import Installations, InstallGrant
from b24robots.store.journal import Journal, NewInvocation


def install(db: Database, member: str = "m" * 32, *, domain: str = "", access_token: str = "a") -> int:
    """An installation row (also used by the CLI tests)."""
    inst = Installations(db, Vault(b"k")).install(
        InstallGrant(
            member_id=member,
            domain=domain or f"{member[:4]}.bitrix24.com",
            access_token=access_token,
            refresh_token="r",
            expires_at=time.time() + 3600,
            application_token="t",
            client_endpoint="https://x.bitrix24.com/rest/",
            server_endpoint="https://oauth.bitrix.info/rest/",
        )
    )
    return inst.id


def new(installation_id: int, token: str, **over: object) -> NewInvocation:
    fields: dict[str, object] = dict(
        event_token=token,
        installation_id=installation_id,
        robot_code="r",
        origin="module",
        robot_version_id=None,
        workflow_id="w",
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        use_subscription=True,
        timeout_duration=0,
        portal_ts=0,
        auth_user_id=1,
        properties={"a": "1"},
        inputs={"a": 1},
    )
    fields.update(over)
    return NewInvocation(**fields)  # type: ignore[arg-type]


def test_enqueue_is_unique_on_event_token(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    first = j.enqueue(new(iid, "tok"))
    again = j.enqueue(new(iid, "tok"))
    assert first[1] is True and again == (first[0], False)
    assert len(j.recent()) == 1


def test_claims_do_not_overlap_and_expired_leases_come_back(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    for n in range(5):
        j.enqueue(new(iid, f"t{n}"), now=100.0)
    a = j.claim("A", 3, lease=10, now=101.0)
    b = j.claim("B", 3, lease=10, now=101.0)
    assert len(a) == 3 and len(b) == 2 and not {i.id for i in a} & {i.id for i in b}
    assert j.claim("C", 5, lease=10, now=105.0) == []
    assert j.extend([i.id for i in a], "A", lease=10, now=109.0) == 3
    back = j.claim("C", 5, lease=10, now=112.0)  # B's leases expired at 111; A extended to 119
    assert sorted(i.id for i in back) == sorted(i.id for i in b) and all(i.attempts == 2 for i in back)
    # B comes back late: its result is dropped because the lease is gone
    assert j.finish(b[0].id, "B", outputs={}, log=[]) is False
    assert j.finish(b[0].id, "C", outputs={"x": "1"}, log=["l"]) is True


def test_retry_later_release_and_next_due(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    inv_id, _ = j.enqueue(new(iid, "t"), now=100.0)
    (inv,) = j.claim("A", 1, lease=30, now=100.0)
    assert j.retry_later(inv.id, "A", delay=20, error="down", log=[], now=101.0)
    assert j.get(inv_id).state == "failed" and j.next_due() == pytest.approx(121.0)
    assert j.claim("A", 1, lease=30, now=110.0) == []
    (again,) = j.claim("A", 1, lease=30, now=121.5)
    assert again.attempts == 2
    assert j.release("A") == 1
    assert j.get(inv_id).state == "queued" and j.get(inv_id).attempts == 1


def test_delivery_bookkeeping_and_fair_portal_order(db: Database) -> None:
    j = Journal(db)
    p1, p2 = install(db, "a" * 32), install(db, "b" * 32)
    ids = {}
    for token, portal, at in (("x", p1, 100.0), ("y", p2, 101.0), ("z", p1, 102.0)):
        ids[token], _ = j.enqueue(new(portal, token), now=at)
        (inv,) = j.claim("W", 1, lease=30, now=at)
        j.finish(inv.id, "W", outputs={"o": "1"}, log=[], now=at)
    assert j.portals_owing(now=200.0) == [p1, p2]
    batch = j.claim_deliveries(p1, "S", limit=50, lease=60, now=200.0)
    assert [i.id for i in batch] == [ids["x"], ids["z"]]
    assert j.portals_owing(now=201.0) == [p2]  # p1's answers are leased by the sender
    j.delivered([ids["x"]], "S", now=202.0)
    j.delivery_failed([ids["z"]], "S", error="503", delay=5, give_up_seconds=3600, now=202.0)
    assert j.get(ids["x"]).state == "delivered" and j.get(ids["x"]).delivered_at == 202.0
    z = j.get(ids["z"])
    assert z.state == "answered" and z.deliver_after == 207.0 and z.deliver_attempts == 1


def test_dead_notice_and_deadline(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    inv_id, _ = j.enqueue_dead(new(iid, "bad"), error="bad input", log_message="msg", outputs={"o": "d"}, now=50.0)
    inv = j.get(inv_id)
    assert inv.state == "dead" and inv.owed and inv.outputs == {"o": "d"}
    timed, _ = j.enqueue(new(iid, "timed", timeout_duration=10, portal_ts=1000), now=1000.0)
    assert j.get(timed).deadline_at == 1010.0 and j.get(timed).too_late(1010.0)


def test_operator_retry_and_replay(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    inv_id, _ = j.enqueue(new(iid, "t"))
    with pytest.raises(StoreError, match="only failed or dead"):
        j.retry(inv_id)
    (inv,) = j.claim("A", 1, lease=30)
    j.kill(inv.id, "A", error="boom", log=[], log_message="m", outputs={})
    assert j.retry(inv_id).state == "queued"
    replay = j.replay(inv_id)
    assert replay.replay_of == inv_id and replay.event_token == "t#replay1"
    assert j.original_token(replay) == "t"
    with pytest.raises(NotFound):
        j.get(99999)


def _answered(j: Journal, iid: int, token: str, at: float, **over: object) -> int:
    inv_id, _ = j.enqueue(new(iid, token, **over), now=at)
    (inv,) = j.claim("W", 1, lease=30, now=at)
    j.finish(inv.id, "W", outputs={}, log=[], now=at)
    return inv_id


def _fail_delivery(j: Journal, iid: int, at: float, give_up_seconds: float = 7 * 86400.0) -> None:
    j.claim_deliveries(iid, "S", limit=50, lease=60, now=at)
    j.delivery_failed(
        [i.id for i in j.recent(installation_id=iid)],
        "S",
        error="503",
        delay=1,
        give_up_seconds=give_up_seconds,
        now=at,
    )


def test_a_delivery_is_given_up_by_the_deadline_not_by_a_count_of_attempts(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    forever = _answered(j, iid, "forever", 1000.0)  # timeout_duration 0: the workflow waits without a deadline
    timed = _answered(j, iid, "timed", 1000.0, timeout_duration=600, portal_ts=1000)
    at = 1000.0
    for _ in range(40):  # far more failures than any attempt count would allow
        at += 10.0
        _fail_delivery(j, iid, at)
    assert j.get(forever).state == "answered" and j.get(forever).owed and j.get(forever).deliver_attempts == 40
    assert j.get(timed).state == "answered" and j.get(timed).owed
    _fail_delivery(j, iid, 1600.0)  # the workflow's own deadline (received + 600 s) has come
    t = j.get(timed)
    assert t.state == "dead" and not t.owed and "timeout passed" in t.error
    assert j.get(forever).owed
    _fail_delivery(j, iid, 1000.0 + 7 * 86400.0 - 1)
    assert j.get(forever).owed
    _fail_delivery(j, iid, 1000.0 + 7 * 86400.0)  # B24R_DELIVERY_GIVE_UP_DAYS after it became owed
    f = j.get(forever)
    assert f.state == "dead" and not f.owed and "after 7 day(s)" in f.error


def test_a_final_delivery_failure_is_dead_at_once(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    inv_id = _answered(j, iid, "t", 100.0)
    j.claim_deliveries(iid, "S", limit=50, lease=60, now=101.0)
    j.delivery_failed([inv_id], "S", error="ACCESS_DENIED", delay=1, give_up_seconds=86400, final=True, now=101.0)
    dead = j.get(inv_id)
    assert dead.state == "dead" and not dead.owed and dead.error == "delivery: ACCESS_DENIED"
