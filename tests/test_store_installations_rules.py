"""Installations' exact rules: what an uninstall forgets at rest, what a re-install keeps, lookups, token
versions, needs_reinstall, limits set by hand and the accepted-token cache (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from b24robots.errors import StoreError
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installations import Installations
from b24robots.store.models import InstallationRow
from tests.test_installations_sync import grant

M = "m" * 32


def _row(db: Database) -> tuple[str, str]:
    with db.read() as s:
        row = s.query(InstallationRow).one()
        return row.access_token_enc, row.refresh_token_enc


def test_uninstall_forgets_the_tokens_at_rest_and_the_registrations(db: Database) -> None:
    vault = Vault(b"k")
    inst = Installations(db, vault)
    inst.install(grant())
    inst.set_registration(M, "s.one", "robot", "fp1")
    inst.uninstall(M)
    for stored in _row(db):  # read the database itself: nothing left that decrypts to a token
        assert stored == "" or vault.decrypt(stored) not in ("access-token-a1", "refresh-token-r1")
    assert inst.registrations(M) == {}
    with pytest.raises(StoreError, match="uninstalled"):
        inst.load(M)


def test_an_installation_is_found_by_member_id_or_domain(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    assert inst.get("x.bitrix24.com").member_id == M and inst.get(M).domain == "x.bitrix24.com"


def test_a_registration_is_forgotten_on_its_own(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    inst.set_registration(M, "s.one", "robot", "fp1")
    inst.set_registration(M, "s.two", "activity", "fp2")
    inst.set_registration(M, "s.one", "robot", None)
    assert inst.registrations(M) == {"s.two": ("activity", "fp2")}


def test_a_portal_needing_a_reinstall_is_not_called_until_a_valid_pair_arrives(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    pair = inst.load(M)
    assert inst.mark_needs_reinstall(M, "the refresh token was refused")
    with pytest.raises(StoreError, match="re-installed"):
        inst.load(M)
    assert inst.swap(M, pair.version, replace(pair, access_token="a2"))
    assert inst.get(M).status == "active" and inst.load(M).access_token == "a2"


def test_an_uninstalled_portal_is_never_marked_for_reinstall(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    inst.uninstall(M)
    assert inst.mark_needs_reinstall(M, "refused") is False
    assert inst.get(M).status == "uninstalled"


def test_a_moved_endpoint_moves_the_domain_with_its_port(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    inst.update_endpoint(M, "https://New.example.com:8443/rest/")
    moved = inst.get(M)
    assert moved.domain == "new.example.com:8443" and moved.client_endpoint == "https://New.example.com:8443/rest/"
    assert inst.relocate(M, "new.example.com:8443", "https://new.example.com:8443/rest/") is True
    assert inst.get(M).client_endpoint == "https://new.example.com:8443/rest/"
    assert inst.relocate(M, "new.example.com:8443", "https://new.example.com:8443/rest/") is False


def test_a_reinstall_keeps_what_its_grant_does_not_name(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant(token="app-1"))
    inst.set_portal_info(M, language="de", license="ent")
    inst.install(replace(grant(token=""), language=""))  # a UI app's frame: no token, no language
    assert inst.verify(M, "app-1")[1] == "ok"
    assert inst.get(M).language == "de"


def test_a_refresh_of_the_pair_before_a_reinstall_cannot_overwrite_it(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    old = inst.load(M)
    inst.install(replace(grant(), access_token="access-new"))
    assert inst.load(M).version > old.version
    assert inst.swap(M, old.version, replace(old, access_token="from-the-old-refresh")) is False
    assert inst.load(M).access_token == "access-new"


def test_limits_set_by_hand_win_over_the_plan(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    inst.set_limits(M, 3.0, 100)
    assert inst.apply_plan_limits(M, 5.0, 250) is False
    got = inst.get(M)
    assert (got.rate, got.burst, got.limits_manual) == (3.0, 100, True)


def test_an_inactive_installation_is_never_served_from_the_cache(db: Database) -> None:
    inst = Installations(db, Vault(b"k"), cache_seconds=60.0)
    inst.install(grant())
    pair = inst.load(M)
    inst.mark_needs_reinstall(M, "refused")
    found, verdict = inst.verify(M, "apptoken")
    assert verdict == "ok" and found is not None and not found.active
    # a refresh elsewhere stores a valid pair (no cache invalidation): the next call must see it active
    assert inst.swap(M, pair.version, replace(pair, access_token="a2"))
    found, _ = inst.verify(M, "apptoken")
    assert found is not None and found.active


def test_a_refresh_claim_lapses_after_its_ttl(db: Database) -> None:
    inst = Installations(db, Vault(b"k"))
    inst.install(grant())
    version = inst.load(M).version
    assert inst.claim_refresh(M, version, "A", now=100.0, ttl=10.0)
    assert not inst.claim_refresh(M, version, "B", now=105.0, ttl=10.0)
    assert inst.claim_refresh(M, version, "B", now=111.0, ttl=10.0)  # A crashed: its claim ran out
