"""The connections store: named, typed values, global or per portal, secrets encrypted at rest.

Per-portal rows override the global row's values key by key. Secrets are one Fernet-encrypted JSON
object per row (the key that encrypts tokens); they are decrypted only to make a call and are never
returned by the listing functions. Every change writes an audit entry in the same transaction, naming
the settings and secrets it touched, never a value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from b24robots.connections.base import CallRecord
from b24robots.connections.config import ConnectionConfig, check_kind, check_name, describe, merge, normalize
from b24robots.errors import ConfigError, NotFound, StoreError
from b24robots.store.audit import record_in
from b24robots.store.connection_models import ConnectionCallRow, ConnectionRow
from b24robots.store.crypto import Vault
from b24robots.store.db import Database


@dataclass(frozen=True)
class ConnectionInfo:
    """One row for display: settings with secrets masked, and which secrets are set."""

    name: str
    kind: str
    member_id: str
    settings: dict[str, Any]
    shown: dict[str, Any]
    secrets_set: tuple[str, ...]
    updated_at: float


class ConnectionStore:
    def __init__(self, db: Database, vault: Vault) -> None:
        self.db = db
        self.vault = vault

    # ------------------------------------------------------------------ values
    def _secrets(self, row: ConnectionRow) -> dict[str, str]:
        if not row.secrets_enc:
            return {}
        data = json.loads(self.vault.decrypt(row.secrets_enc))
        return {str(k): str(v) for k, v in data.items()}

    def _info(self, row: ConnectionRow) -> ConnectionInfo:
        secrets = self._secrets(row)
        return ConnectionInfo(
            row.name,
            row.kind,
            row.member_id,
            dict(row.settings),
            describe(row.settings, secrets),
            tuple(sorted(secrets)),
            row.updated_at,
        )

    def add(
        self,
        name: str,
        kind: str,
        settings: Mapping[str, Any],
        secrets: Mapping[str, Any] | None = None,
        *,
        member_id: str = "",
        actor: str = "",
        address: str = "",
    ) -> ConnectionInfo:
        """A new global connection (member_id '') or a portal's first override of an existing one.

        `actor` and `address` say who made the change, for the audit log.
        """
        check_name(name)
        check_kind(kind)
        clean, clean_secrets = normalize(kind, settings, secrets or {})
        now = time.time()
        with self.db.write() as s:
            existing = s.scalars(select(ConnectionRow).where(ConnectionRow.name == name)).all()
            if any(r.member_id == member_id for r in existing):
                where = f" for portal {member_id}" if member_id else ""
                raise ConfigError(f"connection {name!r} already exists{where}; change it with `connections set`")
            glob = next((r for r in existing if r.member_id == ""), None)
            if member_id and glob is None:
                raise ConfigError(f"connection {name!r} does not exist; add it without --portal first")
            if glob is not None and glob.kind != kind:
                raise ConfigError(
                    f"connection {name!r} is a {glob.kind} connection; a portal's values cannot change it"
                )
            row = ConnectionRow(
                name=name,
                member_id=member_id,
                kind=kind,
                settings=clean,
                secrets_enc=self.vault.encrypt(json.dumps(clean_secrets)) if clean_secrets else "",
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            details = {"kind": kind, "portal": member_id, "settings": sorted(clean), "secrets": sorted(clean_secrets)}
            record_in(s, "connection.add", actor=actor, target=name, address=address, details=details)
            return self._info(row)

    def set(
        self,
        name: str,
        settings: Mapping[str, Any],
        secrets: Mapping[str, Any] | None = None,
        *,
        member_id: str = "",
        clear: Sequence[str] = (),
        actor: str = "",
        address: str = "",
    ) -> ConnectionInfo:
        """Change values (blank values keep what is there; `clear` removes keys). A portal row is created on demand."""
        with self.db.write() as s:
            rows = {r.member_id: r for r in s.scalars(select(ConnectionRow).where(ConnectionRow.name == name))}
            glob = rows.get("")
            if glob is None:
                raise NotFound(f"no connection named {name!r}; add it with `b24robots connections add`")
            clean, clean_secrets = normalize(glob.kind, settings, secrets or {})
            row = rows.get(member_id)
            now = time.time()
            if row is None:
                row = ConnectionRow(
                    name=name, member_id=member_id, kind=glob.kind, settings={}, secrets_enc="", created_at=now
                )
                s.add(row)
            merged = {**row.settings, **clean}
            old = self._secrets(row)
            merged_secrets = {**old, **clean_secrets}
            for key in clear:
                merged.pop(key, None)
                merged_secrets.pop(key, None)
            row.settings = merged
            row.secrets_enc = self.vault.encrypt(json.dumps(merged_secrets)) if merged_secrets else ""
            row.updated_at = now
            s.flush()
            details = {
                "portal": member_id,
                "settings": sorted(k for k in clean if k not in clear),
                "secrets": sorted(k for k in clean_secrets if k not in clear),
                "cleared": sorted({str(k) for k in clear}),
            }
            record_in(s, "connection.set", actor=actor, target=name, address=address, details=details)
            return self._info(row)

    def remove(
        self, name: str, *, member_id: str = "", users: Sequence[str] = (), actor: str = "", address: str = ""
    ) -> None:
        """Delete a portal's override, or the connection with all its overrides when no robot uses it."""
        if not member_id and users:
            raise ConfigError(
                f"connection {name!r} is used by robot(s) {', '.join(users)}; remove it from their declarations first"
            )
        with self.db.write() as s:
            query = delete(ConnectionRow).where(ConnectionRow.name == name)
            if member_id:
                query = query.where(ConnectionRow.member_id == member_id)
            removed = s.execute(query).rowcount  # type: ignore[attr-defined]
            if removed == 0:
                where = f" for portal {member_id}" if member_id else ""
                raise NotFound(f"no connection named {name!r}{where}")
            details = {"portal": member_id, "rows": int(removed)}
            record_in(s, "connection.remove", actor=actor, target=name, address=address, details=details)

    def all(self) -> list[ConnectionInfo]:
        with self.db.read() as s:
            rows = s.scalars(select(ConnectionRow).order_by(ConnectionRow.name, ConnectionRow.member_id)).all()
            return [self._info(r) for r in rows]

    def get(self, name: str, member_id: str = "") -> ConnectionInfo:
        with self.db.read() as s:
            row = s.scalars(
                select(ConnectionRow).where(ConnectionRow.name == name, ConnectionRow.member_id == member_id)
            ).first()
            if row is None:
                raise NotFound(f"no connection named {name!r}" + (f" for portal {member_id}" if member_id else ""))
            return self._info(row)

    def resolve(self, name: str, member_id: str) -> ConnectionConfig | None:
        """The global values with the portal's override on top; None when the name is unknown."""
        with self.db.read() as s:
            rows = {
                r.member_id: r
                for r in s.scalars(
                    select(ConnectionRow).where(
                        ConnectionRow.name == name, ConnectionRow.member_id.in_(["", member_id])
                    )
                )
            }
        glob = rows.get("")
        if glob is None:
            return None
        layers = [(glob.settings, self._secrets(glob), glob.updated_at)]
        override = rows.get(member_id) if member_id else None
        if override is not None:
            layers.append((override.settings, self._secrets(override), override.updated_at))
        return merge(name, glob.kind, layers, portal=member_id if override is not None else "")

    # ------------------------------------------------------------------ the journal of calls
    def record_calls(self, invocation_id: int | None, records: Sequence[CallRecord]) -> None:
        if invocation_id is None or not records:
            return  # test runs show their calls in the result; the journal keeps only real runs
        try:
            with self.db.write() as s:
                for r in records:
                    s.add(
                        ConnectionCallRow(
                            invocation_id=invocation_id,
                            connection=r.connection,
                            kind=r.kind,
                            method=r.method[:16],
                            target=r.target[:255],
                            status=r.status,
                            duration_ms=r.duration_ms,
                            bytes=r.bytes,
                            error=r.error,
                            request_body=r.request_body,
                            response_body=r.response_body,
                            at=r.at,
                            attempt=r.attempt,
                        )
                    )
        except StoreError:
            raise
        except Exception as exc:  # a journal write must not hide the run's own outcome
            raise StoreError(
                f"the outbound calls of invocation {invocation_id} could not be journaled: {exc}"
            ) from None

    def calls_for(self, invocation_id: int) -> list[CallRecord]:
        return calls_of(self.db, invocation_id)


def calls_of(db: Database, invocation_id: int) -> list[CallRecord]:
    """The outbound calls (connections and REST) journaled for one invocation, in the order made; needs
    no key (nothing secret is kept in them)."""
    with db.read() as s:
        rows = s.scalars(
            select(ConnectionCallRow)
            .where(ConnectionCallRow.invocation_id == invocation_id)
            .order_by(ConnectionCallRow.at, ConnectionCallRow.id)
        ).all()
        return [
            CallRecord(
                r.connection,
                r.kind,
                r.method,
                r.target,
                r.status,
                r.duration_ms,
                r.bytes,
                r.error,
                r.request_body,
                r.response_body,
                r.at,
                r.attempt,
            )
            for r in rows
        ]
