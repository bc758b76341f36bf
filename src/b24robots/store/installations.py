"""Installations: one row per portal, with encrypted tokens, the hashed application token,
the shared rate-limiter state and the sync status.

`Installations` is also the REST client's `TokenStore` and `LimiterState` (keyed by member_id), so
token refreshes and the leaky bucket are shared by every process that uses the same database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.orm import Session

from b24robots.errors import NotFound, StoreError
from b24robots.fields import netloc_of
from b24robots.rest.limiter import check_rate, gcra_full, gcra_take
from b24robots.rest.tokens import TokenPair
from b24robots.robots.dates import Culture, DateValueError, check_culture, culture_for
from b24robots.store.cache import TtlCache
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.models import ApiKeyRow, InstallationRow, InvocationRow, RegistrationRow

ACTIVE = "active"
NEEDS_REINSTALL = "needs_reinstall"
UNINSTALLED = "uninstalled"


@dataclass(frozen=True)
class Installation:
    """An installation without its secrets (safe to show)."""

    id: int
    member_id: str
    domain: str
    status: str
    status_message: str
    scopes: str
    client_endpoint: str
    server_endpoint: str
    expires_at: float
    token_version: int
    rate: float
    burst: int
    limits_manual: bool
    license: str
    has_application_token: bool
    sync_status: str
    sync_error: str
    synced_at: float | None
    created_at: float
    updated_at: float
    language: str = ""
    culture: str = ""

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def date_culture(self) -> Culture:
        """How this portal writes dates: the override if set, else its language (`UNKNOWN` if neither)."""
        return culture_for(self.culture or self.language)


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


def _public(row: InstallationRow) -> Installation:
    return Installation(
        id=row.id,
        member_id=row.member_id,
        domain=row.domain,
        status=row.status,
        status_message=row.status_message,
        scopes=row.scopes,
        client_endpoint=row.client_endpoint,
        server_endpoint=row.server_endpoint,
        expires_at=row.expires_at,
        token_version=row.token_version,
        rate=row.rate,
        burst=row.burst,
        limits_manual=bool(row.limits_manual),
        license=row.license or "",
        has_application_token=bool(row.application_token_hash),
        sync_status=row.sync_status,
        sync_error=row.sync_error,
        synced_at=row.synced_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        language=row.language or "",
        culture=row.culture or "",
    )


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
            return _public(row)

    def uninstall(self, member_id: str) -> None:
        """Forget the tokens; calls for this portal stop. The journal is kept."""
        with self.db.changing_cached() as s:
            row = self._row(s, member_id)
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
            row = self._row(s, member_id)
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
            inst = _public(row)
            if inst.active:  # an inactive installation is refused: never from memory
                self._verified.put(member_id, (row.application_token_hash, inst), generation)
            return inst, "ok"

    def relocate(self, member_id: str, domain: str, client_endpoint: str) -> bool:
        """Move a portal to a new domain and endpoint; True when something changed.

        Callers pass only what the OAuth server confirmed for this member_id (b24robots.portal).
        """
        with self.db.changing_cached() as s:
            row = self._row(s, member_id)
            if row.domain == domain and row.client_endpoint == client_endpoint:
                return False
            row.domain, row.client_endpoint, row.updated_at = domain, client_endpoint, time.time()
            return True

    def rename(self, member_id: str, domain: str) -> None:
        """The portal now calls itself `domain` (its auth[domain]); the endpoint moves with the next refresh."""
        with self.db.changing_cached() as s:
            row = self._row(s, member_id)
            row.domain, row.updated_at = domain, time.time()

    def set_portal_info(self, member_id: str, *, language: str, license: str) -> Installation:
        """Remember the portal's language and licence (from its app.info)."""
        with self.db.changing_cached() as s:
            row = self._row(s, member_id)
            if language:
                row.language = language[:8]
            row.license = license[:64]
            row.updated_at = time.time()
            s.flush()
            return _public(row)

    def apply_plan_limits(self, member_id: str, rate: float, burst: int) -> bool:
        """Set the limits a plan implies unless an admin set them by hand; True when they changed."""
        check_rate(rate, burst)
        with self.db.changing_cached() as s:
            row = self._row(s, member_id)
            if row.limits_manual or (row.rate == rate and row.burst == burst):
                return False
            row.rate, row.burst, row.updated_at = rate, burst, time.time()
            return True

    def find(self, member_id: str) -> Installation | None:
        """The installation of `member_id`, or None."""
        with self.db.read() as s:
            row = s.scalar(select(InstallationRow).where(InstallationRow.member_id == member_id))
            return _public(row) if row is not None else None

    # --- reads -------------------------------------------------------------------------------
    def all(self) -> list[Installation]:
        with self.db.read() as s:
            return [_public(r) for r in s.scalars(select(InstallationRow).order_by(InstallationRow.domain))]

    def get(self, key: str) -> Installation:
        """By member_id or domain."""
        with self.db.read() as s:
            row = s.scalar(
                select(InstallationRow).where((InstallationRow.member_id == key) | (InstallationRow.domain == key))
            )
            if row is None:
                raise NotFound(f"no installation for {key!r}; see `b24robots installations list`")
            return _public(row)

    def by_id(self, installation_id: int) -> Installation:
        with self.db.read() as s:
            row = s.get(InstallationRow, installation_id)
            if row is None:
                raise NotFound(f"no installation with id {installation_id}")
            return _public(row)

    # --- settings and sync state ---------------------------------------------------------------
    def set_limits(self, key: str, rate: float, burst: int) -> Installation:
        check_rate(rate, burst)
        with self.db.changing_cached() as s:
            row = self._row(s, self.get(key).member_id)
            row.rate, row.burst, row.updated_at = rate, burst, time.time()
            row.limits_manual = True  # a plan detected at the next install no longer overrides them
            s.flush()
            return _public(row)

    def set_culture(self, key: str, culture: str) -> Installation:
        """Override how this portal's dates are read: a language code (`de`, `en`, `fr` ...) or '' / 'auto'
        to follow the portal's language. Raises StoreError naming the known cultures."""
        try:
            code = check_culture(culture)
        except DateValueError as exc:
            raise StoreError(str(exc)) from None
        with self.db.changing_cached() as s:
            row = self._row(s, self.get(key).member_id)
            row.culture, row.updated_at = code, time.time()
            s.flush()
            return _public(row)

    def record_sync(self, member_id: str, status: str, error: str = "") -> None:
        with self.db.write() as s:
            row = self._row(s, member_id)
            row.sync_status, row.sync_error, row.synced_at = status, error, time.time()

    def registrations(self, member_id: str) -> dict[str, tuple[str, str]]:
        """code -> (kind, fingerprint) of what we registered on the portal."""
        with self.db.read() as s:
            row = self._row(s, member_id)
            regs = s.scalars(select(RegistrationRow).where(RegistrationRow.installation_id == row.id))
            return {r.code: (r.kind, r.fingerprint) for r in regs}

    def set_registration(self, member_id: str, code: str, kind: str, fingerprint: str | None) -> None:
        """Record (or with fingerprint None, forget) what is registered for `code` on the portal."""
        with self.db.write() as s:
            row = self._row(s, member_id)
            reg = s.scalar(
                select(RegistrationRow).where(RegistrationRow.installation_id == row.id, RegistrationRow.code == code)
            )
            if fingerprint is None:
                if reg is not None:
                    s.delete(reg)
                return
            if reg is None:
                reg = RegistrationRow(installation_id=row.id, code=code)
                s.add(reg)
            reg.kind, reg.fingerprint, reg.registered_at = kind, fingerprint, time.time()

    def clear_registrations(self, member_id: str) -> None:
        """The portal deleted every robot of the app (update or uninstall)."""
        with self.db.write() as s:
            row = self._row(s, member_id)
            s.execute(delete(RegistrationRow).where(RegistrationRow.installation_id == row.id))

    # --- TokenStore ----------------------------------------------------------------------------
    def load(self, portal_key: str) -> TokenPair:
        with self.db.read() as s:
            row = self._row(s, portal_key)
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
            self._row(s, portal_key)  # NotFound for an unknown portal
            return False

    def update_endpoint(self, portal_key: str, client_endpoint: str) -> None:
        with self.db.changing_cached() as s:
            row = self._row(s, portal_key)
            row.client_endpoint = client_endpoint
            row.domain = netloc_of(client_endpoint) or row.domain  # host with its port
            row.updated_at = time.time()

    # --- LimiterState ----------------------------------------------------------------------------
    def take(self, portal: str, clock: Callable[[], float], rate: float, burst: int) -> float:
        """Take one slot of the portal's bucket if it is free now; else return the wait, taking nothing.

        Atomic across processes (row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite); `clock` is read
        once the row is locked, so time spent waiting for the lock is not counted as sent. The rate
        and burst stored in the row win over the caller's (`rate`, `burst` are what a caller
        assumes), so `b24robots installations limits` reaches every running process at once.
        """
        with self.db.write() as s:
            tat, stored_rate, stored_burst = self._bucket(s, portal)
            new_tat, wait = gcra_take(tat, clock(), stored_rate or rate, stored_burst or burst)
            if wait <= 0:
                row = update(InstallationRow).where(InstallationRow.member_id == portal)
                s.execute(row.values(limiter_tat=new_tat))
            return wait

    def backoff(self, portal: str, now: float, rate: float, burst: int) -> None:
        """The portal refused a request with QUERY_LIMIT_EXCEEDED at `now`: count its bucket as full,
        so every process waits for a slot to leak before its next request."""
        with self.db.write() as s:
            tat, stored_rate, stored_burst = self._bucket(s, portal)
            full = gcra_full(tat, now, stored_rate or rate, stored_burst or burst)
            s.execute(update(InstallationRow).where(InstallationRow.member_id == portal).values(limiter_tat=full))

    def _bucket(self, s: Session, portal: str) -> tuple[float, float, int]:
        stmt = select(InstallationRow.limiter_tat, InstallationRow.rate, InstallationRow.burst).where(
            InstallationRow.member_id == portal
        )
        if not self.db.is_sqlite:
            stmt = stmt.with_for_update()
        row = s.execute(stmt).first()
        if row is None:
            raise NotFound(f"no installation stored for portal {portal!r}")
        return float(row[0] or 0.0), row[1], row[2]

    def tat(self, member_id: str) -> float:
        """The stored GCRA theoretical arrival time of a portal's bucket."""
        with self.db.read() as s:
            return float(
                s.scalar(select(InstallationRow.limiter_tat).where(InstallationRow.member_id == member_id)) or 0.0
            )

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _row(s: Session, member_id: str) -> InstallationRow:
        row = s.scalar(select(InstallationRow).where(InstallationRow.member_id == member_id))
        if row is None:
            raise NotFound(f"no installation stored for portal {member_id!r}")
        return row

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
