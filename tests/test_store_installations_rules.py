"""Installations' exact rules: what an uninstall forgets at rest, what a re-install keeps, lookups, moves,
limits set by hand and the accepted-token cache (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from b24robots.errors import StoreError
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installations import Installations
from b24robots.store.models import InstallationRow
from b24robots.store.portal_tokens import PortalTokens
from b24robots.store.registrations import Registrations
from tests.test_installations_sync import grant

M = "m" * 32


def _row(db: Database) -> tuple[str, str]:
    with db.read() as s:
        row = s.query(InstallationRow).one()
        return row.access_token_enc, row.refresh_token_enc


def test_uninstall_forgets_the_tokens_at_rest_and_the_registrations(db: Database) -> None:
    vault = Vault(b"k")
    inst, ledger = Installations(db, vault), Registrations(db)
    inst.install(grant())
    ledger.record(M, "s.one", "robot", "fp1")
    inst.uninstall(M)
    for stored in _row(db):  # read the database itself: nothing left that decrypts to a token
        assert stored == "" or vault.decrypt(stored) not in ("access-token-a1", "refresh-token-r1")
    assert ledger.of(M) == {}
    with pytest.raises(StoreError, match="uninstalled"):
        PortalTokens(db, vault).load(M)


def test_an_installation_is_found_by_member_id_or_domain(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    assert inst.get("x.bitrix24.com").member_id == M and inst.get(M).domain == "x.bitrix24.com"


def test_a_relocated_portal_moves_only_when_its_domain_or_endpoint_changed(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    assert inst.relocate(M, "x.bitrix24.com", "https://x.bitrix24.com/rest/") is False
    assert inst.relocate(M, "x.bitrix24.com", "https://x.bitrix24.com:8443/rest/") is True
    assert inst.get(M).client_endpoint == "https://x.bitrix24.com:8443/rest/"
    assert inst.relocate(M, "new.example.com:8443", "https://new.example.com:8443/rest/") is True
    moved = inst.get(M)
    assert (moved.domain, moved.client_endpoint) == ("new.example.com:8443", "https://new.example.com:8443/rest/")
    assert inst.relocate(M, "new.example.com:8443", "https://new.example.com:8443/rest/") is False


def test_a_reinstall_keeps_what_its_grant_does_not_name(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant(token="app-1"))
    inst.set_portal_info(M, language="de", license="ent")
    inst.install(replace(grant(token=""), language=""))  # a UI app's frame: no token, no language
    assert inst.verify(M, "app-1")[1] == "ok"
    assert inst.get(M).language == "de"


def test_limits_set_by_hand_win_over_the_plan(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    inst.set_limits(M, 3.0, 100)
    assert inst.apply_plan_limits(M, 5.0, 250) is False
    got = inst.get(M)
    assert (got.rate, got.burst, got.limits_manual) == (3.0, 100, True)


def test_an_inactive_installation_is_never_served_from_the_cache(db: Database) -> None:
    inst, tokens = Installations(db, Vault(b"k"), cache_seconds=60.0), PortalTokens(db, Vault(b"k"))
    inst.install(grant())
    pair = tokens.load(M)
    tokens.mark_needs_reinstall(M, "refused")
    found, verdict = inst.verify(M, "apptoken")
    assert verdict == "ok" and found is not None and not found.active
    # a refresh elsewhere stores a valid pair (no cache invalidation): the next call must see it active
    assert tokens.swap(M, pair.version, replace(pair, access_token="a2"))
    found, _ = inst.verify(M, "apptoken")
    assert found is not None and found.active
