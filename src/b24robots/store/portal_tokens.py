"""The REST client's token store (`b24robots.rest.tokens.TokenStore`) on the installations table, keyed
by member_id: every process that uses the same database shares one pair per portal and one refresh.

The tokens are encrypted at rest with the Vault (store/crypto.py), as an install stores them.
"""

from __future__ import annotations

import time

from sqlalchemy import case, or_, update

from b24robots.errors import StoreError
from b24robots.fields import netloc_of
from b24robots.rest.tokens import TokenPair
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installation_rows import ACTIVE, NEEDS_REINSTALL, UNINSTALLED, stored_row
from b24robots.store.models import InstallationRow


class PortalTokens:
    def __init__(self, db: Database, vault: Vault) -> None:
        self.db = db
        self.vault = vault

    def load(self, portal_key: str) -> TokenPair:
        with self.db.read() as s:
            row = stored_row(s, portal_key)
            if row.status == UNINSTALLED:
                raise StoreError(f"portal {row.domain} has uninstalled the application; no calls are made")
            if row.status == NEEDS_REINSTALL:
                raise StoreError(f"portal {row.domain} needs the application re-installed: {row.status_message}")
            return self._pair(row)

    def claim_refresh(self, portal_key: str, version: int, holder: str, now: float, ttl: float) -> bool:
        """One UPDATE decides (a row lock on PostgreSQL, the writer lock on SQLite): no transaction
        stays open while the OAuth server answers, so intake and the limiter never wait for it."""
        with self.db.write() as s:
            result = s.execute(
                update(InstallationRow)
                .where(
                    InstallationRow.member_id == portal_key,
                    InstallationRow.token_version == version,
                    or_(
                        InstallationRow.refresh_holder.is_(None),
                        InstallationRow.refresh_holder == holder,
                        InstallationRow.refresh_until.is_(None),
                        InstallationRow.refresh_until < now,
                    ),
                )
                .values(refresh_holder=holder, refresh_until=now + ttl)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    def release_refresh(self, portal_key: str, holder: str) -> None:
        with self.db.write() as s:
            s.execute(
                update(InstallationRow)
                .where(InstallationRow.member_id == portal_key, InstallationRow.refresh_holder == holder)
                .values(refresh_holder=None, refresh_until=None)
            )

    def swap(self, portal_key: str, expected_version: int, new: TokenPair) -> bool:
        """Store a refreshed pair if nobody stored one since `expected_version`. A valid pair ends a
        `needs_reinstall` mark (set by a process that lost a refresh race) and the refresh claim."""
        with self.db.write() as s:
            result = s.execute(
                update(InstallationRow)
                .where(InstallationRow.member_id == portal_key, InstallationRow.token_version == expected_version)
                .values(
                    access_token_enc=self.vault.encrypt(new.access_token),
                    refresh_token_enc=self.vault.encrypt(new.refresh_token),
                    expires_at=new.expires_at,
                    token_version=expected_version + 1,
                    client_endpoint=new.client_endpoint or InstallationRow.client_endpoint,
                    server_endpoint=new.server_endpoint or InstallationRow.server_endpoint,
                    status=case((InstallationRow.status == NEEDS_REINSTALL, ACTIVE), else_=InstallationRow.status),
                    status_message=case(
                        (InstallationRow.status == NEEDS_REINSTALL, ""), else_=InstallationRow.status_message
                    ),
                    refresh_holder=None,
                    refresh_until=None,
                    updated_at=time.time(),
                )
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    def mark_needs_reinstall(self, portal_key: str, message: str, version: int | None = None) -> bool:
        """Mark the portal as needing a re-install; with `version`, only while that pair is still the
        stored one (a refresh that lost a race must not lock out the pair the winner stored)."""
        with self.db.changing_cached() as s:
            stmt = update(InstallationRow).where(
                InstallationRow.member_id == portal_key, InstallationRow.status != UNINSTALLED
            )
            if version is not None:
                stmt = stmt.where(InstallationRow.token_version == version)
            result = s.execute(
                stmt.values(
                    status=NEEDS_REINSTALL,
                    status_message=message,
                    refresh_holder=None,
                    refresh_until=None,
                    updated_at=time.time(),
                )
            )
            if getattr(result, "rowcount", 0) == 1:
                return True
            stored_row(s, portal_key)  # NotFound for an unknown portal
            return False

    def update_endpoint(self, portal_key: str, client_endpoint: str) -> None:
        with self.db.changing_cached() as s:
            row = stored_row(s, portal_key)
            row.client_endpoint = client_endpoint
            row.domain = netloc_of(client_endpoint) or row.domain  # host with its port
            row.updated_at = time.time()

    def _pair(self, row: InstallationRow) -> TokenPair:
        return TokenPair(
            access_token=self.vault.decrypt(row.access_token_enc),
            refresh_token=self.vault.decrypt(row.refresh_token_enc),
            expires_at=row.expires_at,
            version=row.token_version,
            client_endpoint=row.client_endpoint,
            server_endpoint=row.server_endpoint,
            domain=row.domain,
            member_id=row.member_id,
        )
