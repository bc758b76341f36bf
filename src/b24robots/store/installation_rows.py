"""The installations table as every store of it reads it: the status values, the public `Installation`
(a row without its secrets) and the lookup of a row by member_id.

The table is kept by four stores, one per consumer: `installations` (lifecycle and reads),
`portal_tokens` (the REST client's token store), `limiter_state` (the shared rate-limiter buckets) and
`registrations` (the ledger of what the sync registered on each portal).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from b24robots.errors import NotFound
from b24robots.robots.dates import Culture, culture_for
from b24robots.store.models import InstallationRow

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


def public(row: InstallationRow) -> Installation:
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


def stored_row(s: Session, member_id: str) -> InstallationRow:
    """The row of `member_id`; NotFound when the portal was never installed."""
    row = s.scalar(select(InstallationRow).where(InstallationRow.member_id == member_id))
    if row is None:
        raise NotFound(f"no installation stored for portal {member_id!r}")
    return row
