"""Admin users of the web UI: argon2 password hashes, sign-in rate limiting, one-time login links.

Failed sign-ins are counted per (user name, client address) in the database, so every web process
behind a load balancer shares the count. A one-time login link carries a random token; only its
SHA-256 is stored, it expires after `LINK_TTL` seconds and works once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from b24robots.errors import AdminAuthError, NotFound, TooManyAttempts
from b24robots.store.db import Database
from b24robots.store.user_models import AdminUserRow, LoginAttemptRow, LoginTokenRow

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60.0
LINK_TTL = 10 * 60.0

_hasher = PasswordHasher()
# verifying against this keeps the time of "no such user" equal to "wrong password"
_DUMMY_HASH = _hasher.hash("b24robots-dummy-password")


@dataclass(frozen=True)
class AdminUser:
    id: int
    username: str
    created_at: float
    last_login_at: float | None


def _public(row: AdminUserRow) -> AdminUser:
    return AdminUser(row.id, row.username, row.created_at, row.last_login_at)


def check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise AdminAuthError(
            f"user name {username!r} is not allowed; use 1-64 latin letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return username


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AdminAuthError(f"the password is too short; use at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AdminAuthError("the password is too long; use at most 1024 characters")
    return password


def _attempt_key(username: str, address: str) -> str:
    return hashlib.sha256(f"{username.lower()}\0{address}".encode()).hexdigest()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """Admin accounts and sign-in bookkeeping."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- accounts ----------------------------------------------------------------------------
    def create(self, username: str, password: str) -> AdminUser:
        check_username(username)
        check_password(password)
        row = AdminUserRow(username=username, password_hash=_hasher.hash(password), created_at=time.time())
        try:
            with self.db.write() as s:
                s.add(row)
                s.flush()
                return _public(row)
        except IntegrityError:
            raise AdminAuthError(f"an admin user named {username!r} already exists") from None

    def set_password(self, username: str, password: str) -> None:
        check_password(password)
        with self.db.write() as s:
            row = s.scalar(select(AdminUserRow).where(AdminUserRow.username == username))
            if row is None:
                raise NotFound(f"no admin user {username!r}; see `b24robots admin list-users`")
            row.password_hash = _hasher.hash(password)

    def delete(self, username: str) -> None:
        with self.db.write() as s:
            row = s.scalar(select(AdminUserRow).where(AdminUserRow.username == username))
            if row is None:
                raise NotFound(f"no admin user {username!r}; see `b24robots admin list-users`")
            s.execute(delete(LoginTokenRow).where(LoginTokenRow.user_id == row.id))
            s.delete(row)

    def list(self) -> list[AdminUser]:
        with self.db.read() as s:
            return [_public(r) for r in s.scalars(select(AdminUserRow).order_by(AdminUserRow.username))]

    def get(self, user_id: int) -> AdminUser | None:
        with self.db.read() as s:
            row = s.get(AdminUserRow, user_id)
            return _public(row) if row else None

    def count(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(AdminUserRow)) or 0)

    # --- sign-in -----------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, address: str, now: float | None = None) -> AdminUser:
        """Check a password. Raises TooManyAttempts when this user+address failed `MAX_FAILURES` times in
        the last `FAILURE_WINDOW` seconds, AdminAuthError on a wrong name or password."""
        now = time.time() if now is None else now
        key = _attempt_key(username, address)
        with self.db.read() as s:
            recent = list(
                s.scalars(
                    select(LoginAttemptRow.at)
                    .where(LoginAttemptRow.key == key, LoginAttemptRow.at > now - FAILURE_WINDOW)
                    .order_by(LoginAttemptRow.at)
                )
            )
            row = s.scalar(select(AdminUserRow).where(AdminUserRow.username == username))
            stored_hash = row.password_hash if row else _DUMMY_HASH
        if len(recent) >= MAX_FAILURES:
            wait = max(1.0, recent[-MAX_FAILURES] + FAILURE_WINDOW - now)
            raise TooManyAttempts(f"too many failed sign-ins; try again in {int(wait // 60) + 1} min", wait)
        try:
            ok = _hasher.verify(stored_hash, password) and row is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok or row is None:
            with self.db.write() as s:
                s.add(LoginAttemptRow(key=key, at=now))
                # old failures are of no use: keep the table small
                s.execute(delete(LoginAttemptRow).where(LoginAttemptRow.at < now - 2 * FAILURE_WINDOW))
            raise AdminAuthError("wrong user name or password")
        with self.db.write() as s:
            s.execute(delete(LoginAttemptRow).where(LoginAttemptRow.key == key))
            fresh = s.get(AdminUserRow, row.id)
            if fresh is not None:
                fresh.last_login_at = now
                if _hasher.check_needs_rehash(fresh.password_hash):
                    fresh.password_hash = _hasher.hash(password)
        if fresh is None:
            raise AdminAuthError("wrong user name or password")
        return _public(fresh)

    # --- one-time login links --------------------------------------------------------------------
    def issue_link_token(self, username: str, ttl: float = LINK_TTL, now: float | None = None) -> str:
        """A random token for a one-time login link; only its hash is stored."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        with self.db.write() as s:
            row = s.scalar(select(AdminUserRow).where(AdminUserRow.username == username))
            if row is None:
                raise NotFound(f"no admin user {username!r}; see `b24robots admin list-users`")
            s.execute(delete(LoginTokenRow).where(LoginTokenRow.expires_at < now))
            s.add(LoginTokenRow(user_id=row.id, token_hash=_token_hash(token), expires_at=now + ttl))
        return token

    def redeem_link_token(self, token: str, now: float | None = None) -> AdminUser:
        """Spend a login-link token; AdminAuthError when unknown, expired or already used."""
        now = time.time() if now is None else now
        if not token or len(token) > 200:
            raise AdminAuthError("this login link is not valid")
        with self.db.write() as s:
            link = s.scalar(select(LoginTokenRow).where(LoginTokenRow.token_hash == _token_hash(token)))
            if link is None:
                raise AdminAuthError("this login link is not valid")
            if link.used_at is not None:
                raise AdminAuthError("this login link was already used; ask for a new one")
            if link.expires_at <= now:
                raise AdminAuthError("this login link has expired; ask for a new one")
            link.used_at = now
            user = s.get(AdminUserRow, link.user_id)
            if user is None:
                raise AdminAuthError("this login link is not valid")
            user.last_login_at = now
            return _public(user)
