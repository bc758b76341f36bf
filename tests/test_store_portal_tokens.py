"""The token store's exact rules: `needs_reinstall` and its end, uninstalled portals, a moved endpoint,
token versions against a re-install and the refresh claim's lapse (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from b24robots.errors import NotFound, StoreError
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installations import Installations
from b24robots.store.portal_tokens import PortalTokens
from tests.test_installations_sync import grant

M = "m" * 32


def stores(db: Database) -> tuple[Installations, PortalTokens]:
    return Installations(db, Vault(b"k")), PortalTokens(db, Vault(b"k"))


def test_a_portal_needing_a_reinstall_is_not_called_until_a_valid_pair_arrives(db: Database) -> None:
    inst, tokens = stores(db)
    inst.install(grant())
    pair = tokens.load(M)
    assert tokens.mark_needs_reinstall(M, "the refresh token was refused")
    with pytest.raises(StoreError, match="re-installed"):
        tokens.load(M)
    assert tokens.swap(M, pair.version, replace(pair, access_token="a2"))
    assert inst.get(M).status == "active" and tokens.load(M).access_token == "a2"


def test_an_uninstalled_portal_is_never_marked_for_reinstall(db: Database) -> None:
    inst, tokens = stores(db)
    inst.install(grant())
    inst.uninstall(M)
    assert tokens.mark_needs_reinstall(M, "refused") is False
    assert inst.get(M).status == "uninstalled"
    with pytest.raises(NotFound):
        tokens.mark_needs_reinstall("n" * 32, "refused")


def test_a_moved_endpoint_moves_the_domain_with_its_port(db: Database) -> None:
    inst, tokens = stores(db)
    inst.install(grant())
    tokens.update_endpoint(M, "https://New.example.com:8443/rest/")
    moved = inst.get(M)
    assert moved.domain == "new.example.com:8443" and moved.client_endpoint == "https://New.example.com:8443/rest/"
    assert tokens.load(M).domain == "new.example.com:8443"


def test_a_refresh_of_the_pair_before_a_reinstall_cannot_overwrite_it(db: Database) -> None:
    inst, tokens = stores(db)
    inst.install(grant())
    old = tokens.load(M)
    inst.install(replace(grant(), access_token="access-new"))
    assert tokens.load(M).version > old.version
    assert tokens.swap(M, old.version, replace(old, access_token="from-the-old-refresh")) is False
    assert tokens.load(M).access_token == "access-new"


def test_a_refresh_claim_lapses_after_its_ttl(db: Database) -> None:
    inst, tokens = stores(db)
    inst.install(grant())
    version = tokens.load(M).version
    assert tokens.claim_refresh(M, version, "A", now=100.0, ttl=10.0)
    assert not tokens.claim_refresh(M, version, "B", now=105.0, ttl=10.0)
    assert tokens.claim_refresh(M, version, "B", now=111.0, ttl=10.0)  # A crashed: its claim ran out


def test_compare_and_swap_has_one_winner(db: Database) -> None:
    inst, tokens = stores(db)
    inst.install(grant())
    pair = tokens.load(M)
    assert tokens.swap(M, pair.version, replace(pair, access_token="a2", version=pair.version + 1))
    assert not tokens.swap(M, pair.version, replace(pair, access_token="a3", version=pair.version + 1))
    assert tokens.load(M).access_token == "a2"


def test_an_uninstalled_portal_refuses_token_loads(db: Database) -> None:
    inst, tokens = stores(db)
    inst.install(grant())
    inst.uninstall(M)
    with pytest.raises(StoreError, match="uninstalled"):
        tokens.load(M)
