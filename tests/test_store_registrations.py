"""The registrations ledger: what the sync registered on each portal, per code, recorded, replaced,
forgotten one by one or all at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from b24robots.errors import NotFound
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installations import Installations
from b24robots.store.registrations import Registrations
from tests.test_installations_sync import grant

M, N = "m" * 32, "n" * 32


def test_a_registration_is_replaced_and_forgotten_on_its_own(db: Database) -> None:
    Installations(db, Vault(b"k")).install(grant())
    ledger = Registrations(db)
    ledger.record(M, "s.one", "robot", "fp1")
    ledger.record(M, "s.two", "activity", "fp2")
    ledger.record(M, "s.two", "activity", "fp3")
    ledger.record(M, "s.one", "robot", None)
    ledger.record(M, "s.gone", "robot", None)  # never recorded: nothing to forget
    assert ledger.of(M) == {"s.two": ("activity", "fp3")}


def test_clearing_a_portal_leaves_the_others(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    inst.install(grant(member=N))
    ledger = Registrations(db)
    ledger.record(M, "s.one", "robot", "fp1")
    ledger.record(N, "s.one", "robot", "fp1")
    ledger.clear(M)
    assert ledger.of(M) == {} and ledger.of(N) == {"s.one": ("robot", "fp1")}
    with pytest.raises(NotFound):
        ledger.of("x" * 32)
