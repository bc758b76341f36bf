"""The rate limiter's buckets in the installation rows: one bucket per portal shared by every process,
and the stored limits win over a caller's (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from b24robots.errors import NotFound
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installations import Installations
from b24robots.store.limiter_state import LimiterBuckets
from tests.test_installations_sync import grant

M = "m" * 32


def test_the_bucket_is_shared_through_the_row(db: Database) -> None:
    Installations(db, Vault(b"k")).install(grant())
    a, b = LimiterBuckets(db), LimiterBuckets(db)  # two processes
    clock = [1000.0]
    waits = [(a if i % 2 else b).take(M, lambda: clock[0], 2.0, 50) for i in range(50)]
    # the burst, taken by both in turn, less the one slot ARRIVAL_SLACK (0.5 s) costs after an empty bucket
    assert waits[:49] == [0.0] * 49
    assert waits[49] == pytest.approx(0.5)
    assert a.take(M, lambda: clock[0], 2.0, 50) == pytest.approx(0.5)  # a wait takes nothing
    clock[0] += 0.5
    assert b.take(M, lambda: clock[0], 2.0, 50) == 0.0
    assert a.take(M, lambda: clock[0], 2.0, 50) == pytest.approx(0.5)
    b.backoff(M, clock[0] + 10, 2.0, 50)  # the portal refused one: every process waits
    assert a.take(M, lambda: clock[0] + 10, 2.0, 50) == pytest.approx(0.5)
    assert a.tat(M) == pytest.approx(clock[0] + 10 + 25.0)  # full: the burst's 50 slots at 2/s ahead


def test_the_stored_rate_limit_wins_for_every_process(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    inst.set_limits(M, 5.0, 250)  # e.g. from `b24robots installations limits` in another process
    buckets = LimiterBuckets(db)
    waits = [buckets.take(M, lambda: 1000.0, 2.0, 50) for _ in range(251)]  # a caller that assumes 2/s, 50
    # 5/s, 250: ARRIVAL_SLACK (0.5 s) costs 2.5 slots after the empty bucket
    assert max(waits[:247]) < 1e-6 and waits[247] == pytest.approx(0.1) and waits[250] == pytest.approx(0.1)
    buckets.backoff(M, 2000.0, 2.0, 50)  # a refusal fills the stored bucket: 250 slots at 5/s
    assert buckets.tat(M) == pytest.approx(2050.0)


def test_a_portal_never_installed_has_no_bucket(db: Database) -> None:
    buckets = LimiterBuckets(db)
    with pytest.raises(NotFound):
        buckets.take(M, lambda: 1000.0, 2.0, 50)
    assert buckets.tat(M) == 0.0
