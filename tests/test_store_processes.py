"""The processes table on SQLite and PostgreSQL: heartbeats and taking over a stopped process's leases."""

from __future__ import annotations

from b24robots.store.db import Database
from b24robots.store.journal import Journal
from b24robots.store.processes import Processes, ProcessInfo
from tests.test_store_journal import install, new


def proc(pid: str, *, incarnation: str = "worker:h:/data", host: str = "h", at: float = 100.0) -> ProcessInfo:
    return ProcessInfo(f"p{pid}", "worker", host, incarnation, int(pid), at, at)


def test_a_stale_process_loses_its_run_and_delivery_leases_and_a_live_one_keeps_them(db: Database) -> None:
    j, procs = Journal(db), Processes(db)
    iid = install(db)
    dead, alive, me = proc("1"), proc("2", incarnation="worker:h:b"), proc("3", incarnation="worker:h:c")
    for p in (dead, alive, me):
        procs.register(p)
    for token in ("r1", "r2", "d1"):
        j.enqueue(new(iid, token), now=100.0)
    (run_dead,) = j.claim("w1", 1, lease=60, now=100.0, process=dead.id)
    (run_alive,) = j.claim("w2", 1, lease=60, now=100.0, process=alive.id)
    (answered,) = j.claim("w1", 1, lease=60, now=100.0, process=dead.id)
    j.finish(answered.id, "w1", outputs={}, log=[], now=100.0)
    (sending,) = j.claim_deliveries(iid, "s1", limit=10, lease=120, now=100.0, process=dead.id)
    assert procs.beat(alive.id, 108.0) and procs.beat(me.id, 108.0)
    assert procs.reclaim_stale(me.id, stale_seconds=10.0, now=109.0).processes == ()  # 9 s silent: not yet
    found = procs.reclaim_stale(me.id, stale_seconds=10.0, now=110.5)
    assert found.processes == (dead.id,) and found.leases == 2
    assert [p.id for p in procs.all()] == [alive.id, me.id]
    # both leases lapsed now (not after 60 s / 120 s): a worker and the sender claim them at once
    # (the live process's run is not among them: its lease holds)
    assert [i.id for i in j.claim("w3", 10, lease=60, now=110.6, process=me.id)] == [run_dead.id]
    assert j.get(run_dead.id).attempts == 2  # the interrupted run counts, as after a lapsed lease
    assert [i.id for i in j.claim_deliveries(iid, "s3", limit=10, lease=120, now=110.6)] == [sending.id]
    assert j.get(run_alive.id).state == "running" and j.get(run_alive.id).attempts == 1


def test_at_start_up_only_a_gone_previous_incarnation_on_this_host_is_reclaimed(db: Database) -> None:
    j, procs = Journal(db), Processes(db)
    iid = install(db)
    before, twin, elsewhere, other = proc("11"), proc("12"), proc("13", host="h2"), proc("14", incarnation="x")
    for p in (before, twin, elsewhere, other):
        procs.register(p)
    for n, p in enumerate((before, twin, elsewhere, other)):
        j.enqueue(new(iid, f"t{n}"), now=100.0)
        j.claim(f"w{n}", 1, lease=60, now=100.0, process=p.id)
    me = proc("15")
    procs.register(me)
    found = procs.reclaim_previous(me, is_running=lambda pid: pid == 12, now=101.0)
    # pid 12 still runs (another worker sharing the name); h2 is another host; "x" another identity
    assert found.processes == (before.id,) and found.leases == 1
    assert sorted(p.id for p in procs.all()) == sorted([twin.id, elsewhere.id, other.id, me.id])


def test_beat_says_when_the_row_was_removed(db: Database) -> None:
    procs = Processes(db)
    procs.register(proc("1"))
    assert procs.beat("p1", 101.0) is True
    procs.unregister("p1")
    assert procs.beat("p1", 102.0) is False
