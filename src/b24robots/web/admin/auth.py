"""Sessions and CSRF for the admin UI.

The session cookie is signed (itsdangerous, HMAC-SHA1 with a key derived from the server's secret
key) and holds the random token of a server-side session row, a CSRF token and pending flash
messages; whether a token still signs anybody in is decided by the row on every request (see
`store/users.py`). The signing key is a keyed hash of a fixed label under the vault key, so it
follows B24R_SECRET_KEY (or the key file) and never needs its own setting. Every POST must carry
the session's CSRF token in the `csrf` form field or the `X-CSRF-Token` header (htmx sends it via
`hx-headers`).

A second cookie, the device token, marks a browser that signed in to an account before: its
sign-in attempts are throttled apart from everyone else's tries on that account, so a stranger's
wrong passwords cannot lock the admin out of their own browser.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import Response

COOKIE = "b24r_admin"
DEVICE_COOKIE = "b24r_device"
# the cookie outlives no session: the server ends sessions earlier (idle and absolute timeouts)
MAX_AGE = 7 * 86400
DEVICE_MAX_AGE = 400 * 86400
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class Session:
    """What the session cookie carries. `changed` marks that the cookie must be written again."""

    token: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    flash: list[tuple[str, str]] = field(default_factory=list)
    changed: bool = False

    def login(self, token: str) -> None:
        """Start a fresh session (a new CSRF token: no fixation from before the sign-in)."""
        self.token = token
        self.csrf = secrets.token_urlsafe(24)
        self.changed = True

    def logout(self) -> None:
        self.token = None
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
        self._devices = URLSafeTimedSerializer(key, salt="b24robots-admin-device")
        self.secure = secure

    def load(self, cookie: str | None) -> Session:
        """A session from the cookie; a missing, forged or expired cookie gives a fresh anonymous one."""
        if not cookie or len(cookie) > 8192:
            return Session(changed=True)
        try:
            data: Any = self._serializer.loads(cookie, max_age=MAX_AGE)
        except BadSignature:
            return Session(changed=True)
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return Session(changed=True)
        token = data.get("s")
        flash = [(str(k), str(m)) for k, m in data.get("f", []) if isinstance(k, str)]
        return Session(token=token if isinstance(token, str) else None, csrf=data["c"], flash=flash)

    def save(self, response: Response, session: Session) -> None:
        value = self._serializer.dumps({"s": session.token, "c": session.csrf, "f": session.flash})
        response.set_cookie(
            COOKIE, value, max_age=MAX_AGE, path="/admin", httponly=True, samesite="lax", secure=self.secure
        )

    def device(self, cookie: str | None, username: str) -> str | None:
        """The device token of this browser for `username`, when it signed in as that user before."""
        if not cookie or len(cookie) > 1024:
            return None
        try:
            data: Any = self._devices.loads(cookie, max_age=DEVICE_MAX_AGE)
        except BadSignature:
            return None
        if isinstance(data, dict) and data.get("u") == username and isinstance(data.get("d"), str):
            return str(data["d"])
        return None

    def save_device(self, response: Response, username: str) -> None:
        value = self._devices.dumps({"u": username, "d": secrets.token_urlsafe(16)})
        response.set_cookie(
            DEVICE_COOKIE,
            value,
            max_age=DEVICE_MAX_AGE,
            path="/admin/login",
            httponly=True,
            samesite="strict",
            secure=self.secure,
        )
