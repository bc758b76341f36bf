"""The journal's exact rules, one per test: whose lease a call touches, when an answer is owed, what an
uninstall or an operator's retry leaves behind (SQLite and PostgreSQL)."""

from __future__ import annotations

from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installations import Installations
from b24robots.store.journal import Journal
from b24robots.store.portal_tokens import PortalTokens
from tests.test_store_journal import install, new


def test_the_deadline_starts_at_the_earlier_of_the_two_clocks(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    behind, _ = j.enqueue(new(iid, "behind", timeout_duration=10, portal_ts=990), now=1000.0)
    ahead, _ = j.enqueue(new(iid, "ahead", timeout_duration=10, portal_ts=1005), now=1000.0)
    assert j.get(behind).deadline_at == 1000.0  # the portal started it 10 s ago by its clock
    assert j.get(ahead).deadline_at == 1010.0  # the portal's clock runs ahead: ours is earlier
    untimed, _ = j.enqueue(new(iid, "untimed", timeout_duration=0, portal_ts=990), now=1000.0)
    assert j.get(untimed).deadline_at is None


def test_a_dead_call_owes_a_notice_only_to_a_waiting_robot(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    waits, _ = j.enqueue_dead(new(iid, "w"), error="bad input", log_message="m", outputs={}, now=10.0)
    fire, _ = j.enqueue_dead(
        new(iid, "f", use_subscription=False), error="bad input", log_message="m", outputs={}, now=10.0
    )
    assert j.get(waits).owed and not j.get(fire).owed
    assert [i.id for i in j.claim_deliveries(iid, "S", limit=50, lease=60, now=11.0)] == [waits]


def test_finishing_a_robot_that_does_not_wait_owes_nothing(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    inv_id, _ = j.enqueue(new(iid, "t", use_subscription=False), now=10.0)
    (inv,) = j.claim("W", 1, lease=30, now=10.0)
    assert j.finish(inv.id, "W", outputs={"o": "1"}, log=[], now=11.0)
    done = j.get(inv_id)
    assert done.state == "answered" and not done.owed
    assert j.portals_owing(now=20.0) == []


def test_extend_pushes_only_the_owners_leases(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    j.enqueue(new(iid, "a"), now=100.0)
    j.enqueue(new(iid, "b"), now=100.0)
    (a,) = j.claim("A", 1, lease=10, now=100.0)
    (b,) = j.claim("B", 1, lease=10, now=100.0)
    assert j.extend([a.id, b.id], "A", lease=10, now=105.0) == 1
    back = j.claim("C", 5, lease=10, now=111.0)  # B's lease ran out at 110; A's goes on to 115
    assert [i.id for i in back] == [b.id]


def test_kill_owes_a_notice_only_while_the_workflow_still_waits(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    early, _ = j.enqueue(new(iid, "early", timeout_duration=60, portal_ts=1000), now=1000.0)
    late, _ = j.enqueue(new(iid, "late", timeout_duration=60, portal_ts=1000), now=1000.0)
    for inv in j.claim("W", 2, lease=600, now=1000.0):
        at = 1030.0 if inv.id == early else 1061.0
        assert j.kill(inv.id, "W", error="boom", log=[], log_message="m", outputs={}, now=at)
    assert j.get(early).owed
    gone = j.get(late)
    assert gone.state == "dead" and not gone.owed  # its workflow stopped waiting at 1060


def test_an_uninstall_kills_what_runs_waits_or_is_owed_on_that_portal_only(db: Database) -> None:
    j = Journal(db)
    iid, other = install(db, "a" * 32), install(db, "b" * 32)
    queued, _ = j.enqueue(new(iid, "q"), now=10.0)
    running, _ = j.enqueue(new(iid, "r"), now=9.0)
    owed, _ = j.enqueue(new(iid, "o"), now=8.0)
    elsewhere, _ = j.enqueue(new(other, "x"), now=10.0)
    for inv in j.claim("W", 2, lease=600, now=11.0):  # the two oldest: o and r
        if inv.id == owed:
            j.finish(inv.id, "W", outputs={}, log=[], now=12.0)
    assert j.get(running).state == "running" and j.get(owed).owed
    assert j.abandon_portal(iid, "uninstalled", now=20.0) == 3
    for inv_id in (queued, running, owed):
        inv = j.get(inv_id)
        assert inv.state == "dead" and not inv.owed and inv.error == "uninstalled", inv
    assert j.claim("W2", 5, lease=60, now=10_000.0)[0].id == elsewhere  # the dead never come back
    assert j.get(elsewhere).state == "running"


def test_portals_owing_skips_portals_that_cannot_be_called(db: Database) -> None:
    j = Journal(db)
    installs = Installations(db, Vault(b"k"))
    ids = {name: install(db, name * 32) for name in "abc"}
    for name, iid in ids.items():
        j.enqueue_dead(new(iid, name), error="e", log_message="m", outputs={}, now=10.0)
    installs.uninstall("b" * 32)
    PortalTokens(db, Vault(b"k")).mark_needs_reinstall("c" * 32, "refresh refused")
    assert j.portals_owing(now=20.0) == [ids["a"]]


def test_a_delivery_lease_is_taken_once_and_settled_only_by_its_owner(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    inv_id, _ = j.enqueue_dead(new(iid, "t"), error="e", log_message="m", outputs={}, now=10.0)
    assert [i.id for i in j.claim_deliveries(iid, "S", limit=50, lease=60, now=11.0)] == [inv_id]
    assert j.claim_deliveries(iid, "T", limit=50, lease=60, now=12.0) == []  # leased by S until 71
    j.delivered([inv_id], "T", now=13.0)  # a sender that lost the lease must not settle it
    j.delivery_failed([inv_id], "T", error="x", delay=1, give_up_seconds=1, final=True, now=13.0)
    still = j.get(inv_id)
    assert still.owed and still.delivered_at is None and still.deliver_attempts == 0 and still.error == "e"
    j.delivered([inv_id], "S", now=14.0)
    assert not j.get(inv_id).owed and j.get(inv_id).delivered_at == 14.0


def test_a_deferred_delivery_spends_no_attempt(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    inv_id, _ = j.enqueue_dead(new(iid, "t"), error="e", log_message="m", outputs={}, now=10.0)
    j.claim_deliveries(iid, "S", limit=50, lease=60, now=11.0)
    j.delivery_deferred([inv_id], "S", delay=3.0, reason="locked", now=11.0)
    inv = j.get(inv_id)
    assert inv.deliver_attempts == 0 and inv.deliver_after == 14.0 and inv.error == "delivery: locked"


def test_an_operator_retries_a_failed_run_and_its_owed_notice_is_withdrawn(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    failed, _ = j.enqueue(new(iid, "f"), now=10.0)
    (inv,) = j.claim("W", 1, lease=30, now=10.0)
    j.retry_later(inv.id, "W", delay=3600, error="down", log=[], now=11.0)
    assert j.get(failed).state == "failed"
    again = j.retry(failed, now=12.0)
    assert again.state == "queued" and again.error == ""
    assert [i.id for i in j.claim("W", 1, lease=30, now=12.0)] == [failed]  # now, not in an hour

    dead, _ = j.enqueue(new(iid, "d"), now=20.0)
    (inv,) = j.claim("W", 1, lease=30, now=20.0)
    j.kill(inv.id, "W", error="boom", log=[], log_message="failed", outputs={}, now=21.0)
    assert j.get(dead).owed  # the failure notice waits for the sender
    retried = j.retry(dead, now=22.0)
    assert retried.state == "queued" and not retried.owed  # the run is tried again: no failure notice
    assert j.claim_deliveries(iid, "S", limit=50, lease=60, now=23.0) == []


def test_each_replay_gets_its_own_token(db: Database) -> None:
    j = Journal(db)
    iid = install(db)
    inv_id, _ = j.enqueue(new(iid, "t"), now=10.0)
    first, second = j.replay(inv_id), j.replay(inv_id)
    assert (first.event_token, second.event_token) == ("t#replay1", "t#replay2")
    assert j.original_token(second) == "t"


def test_portals_owing_names_every_owed_portal_not_only_the_hundred_longest_waiting(db: Database) -> None:
    """The sender takes turns among all owed portals: a portal whose answers are newer than those of 150
    others is still in the look (with a cap of 100 it waited until one of them was drained)."""
    j = Journal(db)
    ids = [install(db, f"{n:032d}") for n in range(151)]
    for n, iid in enumerate(ids):
        j.enqueue_dead(new(iid, f"t{n}"), error="e", log_message="m", outputs={}, now=10.0 + n)
    assert j.portals_owing(now=1000.0) == ids  # the longest-waiting first
