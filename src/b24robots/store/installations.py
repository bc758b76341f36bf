"""Installations: the lifecycle of a portal's row (install, uninstall, moves, settings, sync status) and
the reads of it, with the in-memory cache of accepted application tokens.

The same rows are kept by `portal_tokens` (the REST client's token store), `limiter_state` (the shared
rate-limiter buckets) and `registrations` (the sync's ledger); `installation_rows` is what they share.
An install stores the tokens encrypted and the application token hashed (store/crypto.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from b24robots.errors import NotFound, StoreError
from b24robots.rest.limiter import check_rate
from b24robots.robots.dates import DateValueError, check_culture
from b24robots.store.cache import TtlCache
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.installation_rows import ACTIVE, UNINSTALLED, Installation, public, stored_row
from b24robots.store.models import ApiKeyRow, InstallationRow, InvocationRow, RegistrationRow


@dataclass(frozen=True)
class InstallGrant:
    """A grant the OAuth server confirmed (see b24robots.portal): what to store for the portal.

    An empty `application_token` keeps the stored one (a UI app learns it later from ONAPPINSTALL).
    """

    member_id: str
    domain: str
    access_token: str
    refresh_token: str
    expires_at: float
    application_token: str
    client_endpoint: str
    server_endpoint: str
    scopes: str = ""
    app_status: str = ""
    user_id: int | None = None
    language: str = ""


class Installations:
    def __init__(self, db: Database, vault: Vault, *, cache_seconds: float = 0.0) -> None:
        self.db = db
        self.vault = vault
        # member_id -> (application token digest, installation), for accepted robot calls only
        self._verified: TtlCache[str, tuple[str, Installation]] = TtlCache(db, cache_seconds)

    # --- lifecycle ---------------------------------------------------------------------------
    def install(self, grant: InstallGrant) -> Installation:
        """Create or refresh the installation of `grant.member_id` (a re-install reactivates it)."""
        now = time.time()
        with self.db.changing_cached() as s:
            row = s.scalar(select(InstallationRow).where(InstallationRow.member_id == grant.member_id))
            if row is None:
                row = InstallationRow(member_id=grant.member_id, created_at=now, token_version=0)
                s.add(row)
            row.domain = grant.domain
            row.status = ACTIVE
            row.status_message = ""
            row.scopes = grant.scopes
            row.app_status = grant.app_status
            row.user_id = grant.user_id
            row.client_endpoint = grant.client_endpoint
            row.server_endpoint = grant.server_endpoint
            row.access_token_enc = self.vault.encrypt(grant.access_token)
            row.refresh_token_enc = self.vault.encrypt(grant.refresh_token)
            row.expires_at = grant.expires_at
            if grant.language:
                row.language = grant.language
            row.token_version = (row.token_version or 0) + 1
            row.refresh_holder = row.refresh_until = None
            if grant.application_token:
                row.application_token_hash = self.vault.digest(grant.application_token)
            row.updated_at = now
            s.flush()
            return public(row)

    def uninstall(self, member_id: str) -> None:
        """Forget the tokens; calls for this portal stop. The journal is kept."""
        with self.db.changing_cached() as s:
            row = stored_row(s, member_id)
            row.status = UNINSTALLED
            row.status_message = "the application was uninstalled from the portal"
            row.access_token_enc = ""
            row.refresh_token_enc = ""
            row.updated_at = time.time()
            s.execute(delete(RegistrationRow).where(RegistrationRow.installation_id == row.id))

    def forget_data(self, member_id: str) -> dict[str, int]:
        """ONAPPUNINSTALL with data[CLEAN]=1: the admin chose to delete the app's data.

        Deletes the portal's journal (and the outbound calls recorded with it), its API keys and its
        per-portal connection values; the installation row stays, without tokens, for the audit log.
        """
        from b24robots.store.connection_models import ConnectionRow

        with self.db.changing_cached() as s:
            row = stored_row(s, member_id)
            counts = {
                "journal entries": s.execute(delete(InvocationRow).where(InvocationRow.installation_id == row.id)),
                "API keys": s.execute(delete(ApiKeyRow).where(ApiKeyRow.installation_id == row.id)),
                "connection values": s.execute(delete(ConnectionRow).where(ConnectionRow.member_id == member_id)),
            }
            return {name: int(getattr(result, "rowcount", 0)) for name, result in counts.items()}

    def verify(self, member_id: str, application_token: str) -> tuple[Installation | None, str]:
        """Check an application token in constant time: (installation, "ok"), (None, "unknown") for an
        unknown portal, (None, "mismatch") for a wrong token.

        An accepted token is remembered for `cache_seconds` (until the installation changes); a refusal
        never is: it is always checked against the database, so a portal installed a moment ago, or a
        token the portal changed, is accepted at once."""
        found, hit = self._verified.get(member_id)
        if found and hit is not None and self.vault.matches(application_token, hit[0]):
            return hit[1], "ok"
        generation = self._verified.generation()
        with self.db.read() as s:
            row = s.scalar(select(InstallationRow).where(InstallationRow.member_id == member_id))
            if row is None:
                return None, "unknown"
            if not self.vault.matches(application_token, row.application_token_hash):
                return None, "mismatch"
            inst = public(row)
            if inst.active:  # an inactive installation is refused: never from memory
                self._verified.put(member_id, (row.application_token_hash, inst), generation)
            return inst, "ok"

    def relocate(self, member_id: str, domain: str, client_endpoint: str) -> bool:
        """Move a portal to a new domain and endpoint; True when something changed.

        Callers pass only what the OAuth server confirmed for this member_id (b24robots.portal).
        """
        with self.db.changing_cached() as s:
            row = stored_row(s, member_id)
            if row.domain == domain and row.client_endpoint == client_endpoint:
                return False
            row.domain, row.client_endpoint, row.updated_at = domain, client_endpoint, time.time()
            return True

    def rename(self, member_id: str, domain: str) -> None:
        """The portal now calls itself `domain` (its auth[domain]); the endpoint moves with the next refresh."""
        with self.db.changing_cached() as s:
            row = stored_row(s, member_id)
            row.domain, row.updated_at = domain, time.time()

    def set_portal_info(self, member_id: str, *, language: str, license: str) -> Installation:
        """Remember the portal's language and licence (from its app.info)."""
        with self.db.changing_cached() as s:
            row = stored_row(s, member_id)
            if language:
                row.language = language[:8]
            row.license = license[:64]
            row.updated_at = time.time()
            s.flush()
            return public(row)

    def apply_plan_limits(self, member_id: str, rate: float, burst: int) -> bool:
        """Set the limits a plan implies unless an admin set them by hand; True when they changed."""
        check_rate(rate, burst)
        with self.db.changing_cached() as s:
            row = stored_row(s, member_id)
            if row.limits_manual or (row.rate == rate and row.burst == burst):
                return False
            row.rate, row.burst, row.updated_at = rate, burst, time.time()
            return True

    def find(self, member_id: str) -> Installation | None:
        """The installation of `member_id`, or None."""
        with self.db.read() as s:
            row = s.scalar(select(InstallationRow).where(InstallationRow.member_id == member_id))
            return public(row) if row is not None else None

    # --- reads -------------------------------------------------------------------------------
    def all(self) -> list[Installation]:
        with self.db.read() as s:
            return [public(r) for r in s.scalars(select(InstallationRow).order_by(InstallationRow.domain))]

    def get(self, key: str) -> Installation:
        """By member_id or domain."""
        with self.db.read() as s:
            row = s.scalar(
                select(InstallationRow).where((InstallationRow.member_id == key) | (InstallationRow.domain == key))
            )
            if row is None:
                raise NotFound(f"no installation for {key!r}; see `b24robots installations list`")
            return public(row)

    def by_id(self, installation_id: int) -> Installation:
        with self.db.read() as s:
            row = s.get(InstallationRow, installation_id)
            if row is None:
                raise NotFound(f"no installation with id {installation_id}")
            return public(row)

    # --- settings and sync state ---------------------------------------------------------------
    def set_limits(self, key: str, rate: float, burst: int) -> Installation:
        check_rate(rate, burst)
        with self.db.changing_cached() as s:
            row = stored_row(s, self.get(key).member_id)
            row.rate, row.burst, row.updated_at = rate, burst, time.time()
            row.limits_manual = True  # a plan detected at the next install no longer overrides them
            s.flush()
            return public(row)

    def set_culture(self, key: str, culture: str) -> Installation:
        """Override how this portal's dates are read: a language code (`de`, `en`, `fr` ...) or '' / 'auto'
        to follow the portal's language. Raises StoreError naming the known cultures."""
        try:
            code = check_culture(culture)
        except DateValueError as exc:
            raise StoreError(str(exc)) from None
        with self.db.changing_cached() as s:
            row = stored_row(s, self.get(key).member_id)
            row.culture, row.updated_at = code, time.time()
            s.flush()
            return public(row)

    def record_sync(self, member_id: str, status: str, error: str = "") -> None:
        with self.db.write() as s:
            row = stored_row(s, member_id)
            row.sync_status, row.sync_error, row.synced_at = status, error, time.time()
