"""The run-as user's access token of a robot call, kept encrypted with its journal entry.

The portal sends the token of the robot's run-as user with the call (`auth[access_token]`, bizproc
`classes/general/restactivity.php::execute`: the call is queued with `LOCAL_USER` = that user and
`sendAuth`). The intake stores it in the same INSERT as the call (`group_commit.invocation_values`),
so whichever process runs the call reads it back here. Only the access token (encrypted with the
installation tokens' key, `store/crypto.py`) and its expiry are kept; the user is the entry's
`auth_user_id`. The refresh token the call also carries (`sendRefreshToken`) is never kept: the
caller's client lives for the run only and is never refreshed.

The token is cleared (both columns NULL) when the run is over for good (`Journal.finish`, `kill`,
`expire_late`, `abandon_portal`), when a retry is due only after the token expires
(`Journal.retry_later`), when a run finds it expired (`load`), and by `forget_expired`, which the
background pruner runs on every round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import func, select, update

from b24robots.errors import ConfigError
from b24robots.rest.tokens import UserToken
from b24robots.store.crypto import Vault
from b24robots.store.db import Database
from b24robots.store.models import InvocationRow

log = logging.getLogger("b24robots.store")

CLEARED = {"caller_token": None, "caller_expires_at": None}
"""The column values of an entry whose token is forgotten."""


class CallerTokens:
    """Read back and forget the run-as users' tokens stored with robot calls."""

    def __init__(self, db: Database, vault: Vault) -> None:
        self.db = db
        self.vault = vault

    @property
    def seal(self) -> Callable[[str], str]:
        """What encrypts a token for the intake (`GroupWriter(seal=...)`)."""
        return self.vault.encrypt

    def load(self, inv_id: int, now: float) -> UserToken | None:
        """The entry's run-as user's token, or None: no token came with the call, the run is over, or
        it expired (then it is forgotten at once). A token the key cannot decrypt is None too (logged
        without the token)."""
        with self.db.read() as s:
            row = s.execute(
                select(InvocationRow.caller_token, InvocationRow.caller_expires_at, InvocationRow.auth_user_id).where(
                    InvocationRow.id == inv_id
                )
            ).first()
        if row is None or not row.caller_token or row.caller_expires_at is None:
            return None
        if row.caller_expires_at <= now:
            ago = now - row.caller_expires_at
            log.info("invocation %s: the run-as user's token expired %.0f s before this attempt", inv_id, ago)
            self.forget([inv_id])
            return None
        try:
            access = self.vault.decrypt(row.caller_token)
        except ConfigError:
            log.warning("the run-as user's token of invocation %s cannot be decrypted with the current key", inv_id)
            self.forget([inv_id])
            return None
        return UserToken(access_token=access, expires_at=float(row.caller_expires_at), user_id=row.auth_user_id or 0)

    def forget(self, ids: list[int]) -> None:
        """Clear the tokens of these entries."""
        if not ids:
            return
        with self.db.write() as s:
            s.execute(
                update(InvocationRow)
                .where(InvocationRow.id.in_(ids), InvocationRow.caller_expires_at.is_not(None))
                .values(**CLEARED)
            )

    def forget_expired(self, now: float) -> int:
        """Clear every token that has expired (read through the partial index on `caller_expires_at`)."""
        with self.db.write() as s:
            result = s.execute(
                update(InvocationRow)
                .where(InvocationRow.caller_expires_at.is_not(None), InvocationRow.caller_expires_at <= now)
                .values(**CLEARED)
            )
            return int(getattr(result, "rowcount", 0))

    def held(self) -> int:
        """How many entries hold a token now (tests and diagnostics; never the tokens)."""
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).where(InvocationRow.caller_expires_at.is_not(None))) or 0)
