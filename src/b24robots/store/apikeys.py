"""API keys for the inbound API: shown once, stored as a hash, scoped, revocable.

A key reads `b24r_<prefix>_<secret>`; only its SHA-256 is stored (the secret is 32 random bytes, so
a fast hash is enough) and the prefix identifies it in lists. Each key belongs to one installation
and names the triggers and business-process templates it may fire; `*` means any.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from b24robots.errors import NotFound, StoreError
from b24robots.fields import as_int
from b24robots.store.audit import record_in
from b24robots.store.db import Database
from b24robots.store.models import ApiKeyRow, InstallationRow

ANY = "*"
KEY_PREFIX = "b24r_"


@dataclass(frozen=True)
class ApiKey:
    """A key without its secret (safe to show)."""

    id: int
    name: str
    prefix: str
    installation_id: int
    domain: str
    triggers: list[str]
    templates: list[str]
    created_by: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows_trigger(self, code: str) -> bool:
        return ANY in self.triggers or code.lower() in {t.lower() for t in self.triggers}

    def allows_template(self, template_id: int) -> bool:
        return ANY in self.templates or str(template_id) in self.templates

    @property
    def shown(self) -> str:
        """How the key is shown after creation: its prefix only."""
        return f"{KEY_PREFIX}{self.prefix}_…"


def _hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _public(row: ApiKeyRow, domain: str) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        installation_id=row.installation_id,
        domain=domain,
        triggers=[str(t) for t in row.triggers],
        templates=[str(t) for t in row.templates],
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        installation_id: int,
        *,
        triggers: Sequence[str] = (),
        templates: Sequence[str | int] = (),
        created_by: str = "",
        actor: str = "",
        address: str = "",
    ) -> tuple[ApiKey, str]:
        """A new key; returns it and its plaintext, which is never available again.

        The audit log gets an entry in the name of `actor` (default: `created_by`): the key's prefix
        and scope, never the key.
        """
        name = name.strip()
        if not name:
            raise StoreError("give the key a name that says who uses it (e.g. '1C accounting')")
        trig = sorted({t.strip() for t in triggers if t.strip()})
        tpls = sorted({str(t).strip() for t in templates if str(t).strip()})
        bad = [t for t in tpls if t != ANY and as_int(t, minimum=1) is None]
        if bad:
            raise StoreError(f"template ids must be numbers (or '*'); got {', '.join(bad)}")
        if not trig and not tpls:
            raise StoreError("a key that may fire nothing is useless: name triggers and/or templates ('*' = any)")
        prefix = secrets.token_hex(4)
        plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        now = time.time()
        with self.db.write() as s:
            inst = s.get(InstallationRow, installation_id)
            if inst is None:
                raise NotFound(f"no installation with id {installation_id}")
            row = ApiKeyRow(
                name=name[:255],
                prefix=prefix,
                key_hash=_hash(plaintext),
                installation_id=installation_id,
                triggers=trig,
                templates=tpls,
                created_by=created_by[:255],
                created_at=now,
            )
            s.add(row)
            s.flush()
            key = _public(row, inst.domain)
            details = {"key_id": row.id, "key": key.shown, "portal": inst.domain, "triggers": trig, "templates": tpls}
            record_in(s, "api_key.create", actor=actor or created_by, target=key.name, address=address, details=details)
            return key, plaintext

    def all(self) -> list[ApiKey]:
        with self.db.read() as s:
            rows = s.execute(
                select(ApiKeyRow, InstallationRow.domain)
                .join(InstallationRow, InstallationRow.id == ApiKeyRow.installation_id)
                .order_by(ApiKeyRow.id)
            ).all()
            return [_public(r, d) for r, d in rows]

    def get(self, key_id: int) -> ApiKey:
        with self.db.read() as s:
            found = s.execute(
                select(ApiKeyRow, InstallationRow.domain)
                .join(InstallationRow, InstallationRow.id == ApiKeyRow.installation_id)
                .where(ApiKeyRow.id == key_id)
            ).first()
            if found is None:
                raise NotFound(f"no API key with id {key_id}; see `b24robots api-keys list`")
            return _public(found[0], found[1])

    def revoke(self, key_id: int, *, actor: str = "", address: str = "") -> ApiKey:
        """Revoke a key for good (it stays listed, marked revoked); the audit log says who did."""
        with self.db.write() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no API key with id {key_id}; see `b24robots api-keys list`")
            if row.revoked_at is None:
                row.revoked_at = time.time()
                details = {"key_id": row.id, "key": f"{KEY_PREFIX}{row.prefix}_…"}
                record_in(s, "api_key.revoke", actor=actor, target=row.name, address=address, details=details)
        return self.get(key_id)

    def authenticate(self, plaintext: str, now: float | None = None) -> ApiKey | None:
        """The active key with this plaintext, its last use recorded; None for unknown or revoked keys."""
        if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
            return None
        now = time.time() if now is None else now
        with self.db.write() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == _hash(plaintext)))
            if row is None or row.revoked_at is not None:
                return None
            row.last_used_at = now
            inst = s.get(InstallationRow, row.installation_id)
            return _public(row, inst.domain if inst else "")
