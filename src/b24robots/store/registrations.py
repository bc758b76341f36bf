"""The registrations ledger: per portal, what this server registered there (robots, activities and,
under the `trigger:` prefix, triggers) with a fingerprint of what it sent.

The sync reads it to tell its own registrations from others' (only those are ever deleted) and to find
what changed; the install lifecycle clears it when the portal deleted the app's robots (an update); an
uninstall forgets it with the tokens (store/installations.py).
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from b24robots.store.db import Database
from b24robots.store.installation_rows import stored_row
from b24robots.store.models import RegistrationRow


class Registrations:
    def __init__(self, db: Database) -> None:
        self.db = db

    def of(self, member_id: str) -> dict[str, tuple[str, str]]:
        """code -> (kind, fingerprint) of what we registered on the portal."""
        with self.db.read() as s:
            row = stored_row(s, member_id)
            regs = s.scalars(select(RegistrationRow).where(RegistrationRow.installation_id == row.id))
            return {r.code: (r.kind, r.fingerprint) for r in regs}

    def record(self, member_id: str, code: str, kind: str, fingerprint: str | None) -> None:
        """Record (or with fingerprint None, forget) what is registered for `code` on the portal."""
        with self.db.write() as s:
            row = stored_row(s, member_id)
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

    def clear(self, member_id: str) -> None:
        """The portal has none of our registrations any more (a fresh install, or an update deleted them)."""
        with self.db.write() as s:
            row = stored_row(s, member_id)
            s.execute(delete(RegistrationRow).where(RegistrationRow.installation_id == row.id))
