"""Sessions and CSRF for the admin UI.

The session is a signed cookie (itsdangerous, HMAC-SHA1 with a key derived from the server's secret
key) holding the user id, a CSRF token and pending flash messages; nothing secret is in it. The
signing key is a keyed hash of a fixed label under the vault key, so it follows B24R_SECRET_KEY (or
the key file) and never needs its own setting. Every POST must carry the session's CSRF token in the
`csrf` form field or the `X-CSRF-Token` header (htmx sends it via `hx-headers`).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import Response

COOKIE = "b24r_admin"
MAX_AGE = 12 * 3600
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class Session:
    """What the session cookie carries. `changed` marks that the cookie must be written again."""

    user_id: int | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    flash: list[tuple[str, str]] = field(default_factory=list)
    changed: bool = False

    def login(self, user_id: int) -> None:
        """Start a fresh session for the user (a new CSRF token: no fixation from before the sign-in)."""
        self.user_id = user_id
        self.csrf = secrets.token_urlsafe(24)
        self.changed = True

    def logout(self) -> None:
        self.user_id = None
        self.csrf = secrets.token_urlsafe(24)
        self.flash = []
        self.changed = True

    def add_flash(self, kind: str, message: str) -> None:
        self.flash.append((kind, message))
        self.changed = True

    def pop_flash(self) -> list[tuple[str, str]]:
        out, self.flash = self.flash, []
        if out:
            self.changed = True
        return out

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf.encode(), str(given).encode())


class SessionCodec:
    def __init__(self, key: str, *, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="b24robots-admin-session")
        self.secure = secure

    def load(self, cookie: str | None) -> Session:
        """A session from the cookie; a missing, forged or expired cookie gives a fresh anonymous one."""
        if not cookie:
            return Session(changed=True)
        try:
            data: Any = self._serializer.loads(cookie, max_age=MAX_AGE)
        except BadSignature:
            return Session(changed=True)
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return Session(changed=True)
        user = data.get("u")
        flash = [(str(k), str(m)) for k, m in data.get("f", []) if isinstance(k, str)]
        return Session(user_id=user if isinstance(user, int) else None, csrf=data["c"], flash=flash)

    def save(self, response: Response, session: Session) -> None:
        value = self._serializer.dumps({"u": session.user_id, "c": session.csrf, "f": session.flash})
        response.set_cookie(
            COOKIE, value, max_age=MAX_AGE, path="/admin", httponly=True, samesite="lax", secure=self.secure
        )
