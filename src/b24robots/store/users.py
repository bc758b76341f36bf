"""Admin users of the web UI: argon2 password hashes, revocable sessions, sign-in throttling,
one-time login links.

Sessions are rows: the browser holds a random token, the table its SHA-256. A session ends when its
row goes (sign-out, sign-out everywhere, a password change, the account's deletion) or when it was
idle or alive too long; every request checks the row.

Sign-in throttling: every attempt is counted, in one transaction, before its password is checked:
against the account and the client address, or, from a browser that signed in to the account
before (its device token), against that device only. Each key allows `FREE_FAILURES` tries, then
makes the next one wait a delay that doubles with each failure up to `MAX_DELAY`. A refused
attempt costs no password check and does not lengthen the wait. Nobody can lock an admin out:
strangers' failures, on the account or from the same address (a shared NAT or proxy), never touch
the admin's own browser, and a one-time login link always works.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from b24robots.errors import AdminAuthError, NotFound, TooManyAttempts
from b24robots.store.audit import record_in
from b24robots.store.db import Database
from b24robots.store.user_models import AdminSessionRow, AdminUserRow, LoginThrottleRow, LoginTokenRow

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
FREE_FAILURES = 5
BASE_DELAY = 30.0
MAX_DELAY = 15 * 60.0
# a key without a failure for this long starts over with its free tries
FAILURE_WINDOW = 24 * 3600.0
LINK_TTL = 10 * 60.0
# a session's last use is written at most this often (idle timeouts are coarser than this)
SESSION_TOUCH = 60.0

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this keeps the time of "no such user" equal to "wrong password". Made on
    first use, not at import: an argon2 hash costs every process (workers, the CLI) its start-up time."""
    return _hasher.hash("b24robots-dummy-password")


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


def delay_after(failures: int) -> float:
    """How long a key waits after its n-th failure: nothing for the free tries, then doubling."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY, BASE_DELAY * 2.0 ** min(failures - FREE_FAILURES, 32))


def throttle_keys(username: str, address: str, device: str | None) -> tuple[str, str | None]:
    """The keys an attempt counts against, hashed so names and addresses are not stored: the account
    and the client address, or only the device for a browser that signed in to the account before
    (its cookie is signed by us and names the account, so only someone who once knew the password
    holds one; it keeps its own count, apart from strangers on the same account or address)."""
    if device:
        return _hash(f"dev\0{username}\0{device}"), None
    return _hash(f"acct\0{username}"), _hash(f"addr\0{address}")


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Users:
    """Admin accounts, their sessions and sign-in bookkeeping. Changes are written to the audit log in
    the same transaction; `actor` and `address` say who made them (the CLI passes "cli")."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- accounts ----------------------------------------------------------------------------
    def create(self, username: str, password: str, *, actor: str = "cli", address: str = "") -> AdminUser:
        check_username(username)
        check_password(password)
        row = AdminUserRow(username=username, password_hash=_hasher.hash(password), created_at=time.time())
        try:
            with self.db.write() as s:
                s.add(row)
                s.flush()
                record_in(s, "user.create", actor=actor, target=username, address=address, details={"id": row.id})
                return _public(row)
        except IntegrityError:
            raise AdminAuthError(f"an admin user named {username!r} already exists") from None

    def _row(self, s: Session, username: str) -> AdminUserRow:
        row = s.scalar(select(AdminUserRow).where(AdminUserRow.username == username))
        if row is None:
            raise NotFound(f"no admin user {username!r}; see `b24robots admin list-users`")
        return row

    def set_password(self, username: str, password: str, *, actor: str = "cli", address: str = "") -> None:
        """A new password; every session of the user ends."""
        check_password(password)
        with self.db.write() as s:
            row = self._row(s, username)
            row.password_hash = _hasher.hash(password)
            ended = _count(s.execute(delete(AdminSessionRow).where(AdminSessionRow.user_id == row.id)))
            s.execute(delete(LoginTokenRow).where(LoginTokenRow.user_id == row.id))
            record_in(s, "user.password", actor=actor, target=username, address=address, details={"sessions": ended})

    def delete(self, username: str, *, actor: str = "cli", address: str = "") -> None:
        with self.db.write() as s:
            row = self._row(s, username)
            s.execute(delete(LoginTokenRow).where(LoginTokenRow.user_id == row.id))
            s.execute(delete(AdminSessionRow).where(AdminSessionRow.user_id == row.id))
            record_in(s, "user.delete", actor=actor, target=username, address=address, details={"id": row.id})
            s.delete(row)

    def all(self) -> list[AdminUser]:
        with self.db.read() as s:
            return [_public(r) for r in s.scalars(select(AdminUserRow).order_by(AdminUserRow.username))]

    def get(self, user_id: int) -> AdminUser | None:
        with self.db.read() as s:
            row = s.get(AdminUserRow, user_id)
            return _public(row) if row else None

    def count(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(AdminUserRow)) or 0)

    # --- sessions ----------------------------------------------------------------------------
    def start_session(self, user: AdminUser, address: str, now: float | None = None) -> str:
        """A new session for a signed-in user; returns the token for the cookie (only its hash is kept)."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        with self.db.write() as s:
            s.add(
                AdminSessionRow(
                    token_hash=_hash(token), user_id=user.id, created_at=now, last_seen_at=now, address=address[:64]
                )
            )
        return token

    def session_user(self, token: str, *, idle: float, lifetime: float, now: float | None = None) -> AdminUser | None:
        """The user of a live session, or None when it ended, idled for `idle` seconds or is older than
        `lifetime` seconds (then its row goes)."""
        if not token or len(token) > 200:
            return None
        now = time.time() if now is None else now
        key = _hash(token)
        with self.db.read() as s:
            found = s.execute(
                select(AdminSessionRow, AdminUserRow)
                .join(AdminUserRow, AdminUserRow.id == AdminSessionRow.user_id)
                .where(AdminSessionRow.token_hash == key)
            ).first()
        if found is None:
            return None
        sess, user = found
        if now - sess.created_at > lifetime or now - sess.last_seen_at > idle:
            with self.db.write() as s:
                s.execute(delete(AdminSessionRow).where(AdminSessionRow.token_hash == key))
            return None
        if now - sess.last_seen_at > SESSION_TOUCH:
            with self.db.write() as s:
                live = s.get(AdminSessionRow, key)
                if live is not None:
                    live.last_seen_at = now
        return _public(user)

    def end_session(self, token: str, *, address: str = "") -> None:
        """Sign-out: this session ends (a copy of its cookie stops working too)."""
        with self.db.write() as s:
            row = s.get(AdminSessionRow, _hash(token)) if token else None
            if row is None:
                return
            user = s.get(AdminUserRow, row.user_id)
            s.delete(row)
            if user is not None:
                record_in(s, "session.sign_out", actor=user.username, target=user.username, address=address)

    def end_all_sessions(self, username: str, *, actor: str = "cli", address: str = "") -> int:
        """Sign out everywhere (also after a role change): every session of the user ends; returns how many."""
        with self.db.write() as s:
            row = self._row(s, username)
            ended = _count(s.execute(delete(AdminSessionRow).where(AdminSessionRow.user_id == row.id)))
            details = {"sessions": ended}
            record_in(s, "session.sign_out_everywhere", actor=actor, target=username, address=address, details=details)
            return ended

    def session_count(self, username: str) -> int:
        with self.db.read() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(AdminSessionRow)
                    .join(AdminUserRow, AdminUserRow.id == AdminSessionRow.user_id)
                    .where(AdminUserRow.username == username)
                )
                or 0
            )

    # --- sign-in -----------------------------------------------------------------------------
    def _lock_keys(self, s: Session, keys: Iterable[str], now: float) -> list[LoginThrottleRow]:
        """The throttle rows of `keys`, created when missing and locked until the transaction ends (SQLite:
        the write transaction is exclusive; PostgreSQL: FOR UPDATE, in a fixed order so none deadlock)."""
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        rows = []
        for key in sorted(set(keys)):
            s.execute(
                insert(LoginThrottleRow)
                .values(key=key, failures=0, last_at=now, blocked_until=0.0)
                .on_conflict_do_nothing(index_elements=["key"])
            )
            row = s.execute(select(LoginThrottleRow).where(LoginThrottleRow.key == key).with_for_update()).scalar_one()
            if row.failures and row.last_at < now - FAILURE_WINDOW:
                row.failures, row.blocked_until = 0, 0.0
            rows.append(row)
        return rows

    def authenticate(
        self, username: str, password: str, address: str, *, device: str | None = None, now: float | None = None
    ) -> AdminUser:
        """Check a password. The attempt is counted first, in one transaction with the check of the
        throttle: TooManyAttempts (with `retry_after`) when a key still waits, AdminAuthError on a wrong
        name or password. `device` is the device token of a browser that signed in as `username` before."""
        now = time.time() if now is None else now
        account_key, address_key = throttle_keys(username, address, device)
        with self.db.write() as s:
            rows = self._lock_keys(s, [k for k in (account_key, address_key) if k], now)
            wait = max(r.blocked_until for r in rows) - now
            if wait <= 0:
                for r in rows:
                    r.failures += 1
                    r.last_at = now
                    r.blocked_until = now + delay_after(r.failures)
            row = s.scalar(select(AdminUserRow).where(AdminUserRow.username == username))
            stored_hash = row.password_hash if row else _dummy_hash()
            if secrets.randbelow(64) == 0:  # now and then: forget keys nobody used for long
                s.execute(delete(LoginThrottleRow).where(LoginThrottleRow.last_at < now - FAILURE_WINDOW - MAX_DELAY))
        if wait > 0:
            raise TooManyAttempts(f"too many failed sign-ins; try again in {int(wait // 60) + 1} min", wait)
        try:
            ok = _hasher.verify(stored_hash, password) and row is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        with self.db.write() as s:
            fresh = s.get(AdminUserRow, row.id) if ok and row is not None else None
            if fresh is None:
                record_in(s, "sign_in.failed", actor="(anonymous)", target=username[:64], address=address, now=now)
            else:
                # the account (or device) starts over; the address gets back the try it spent
                s.execute(delete(LoginThrottleRow).where(LoginThrottleRow.key == account_key))
                addr = s.get(LoginThrottleRow, address_key) if address_key else None
                if addr is not None and addr.failures > 0:
                    addr.failures -= 1
                    addr.blocked_until = addr.last_at + delay_after(addr.failures) if addr.failures else 0.0
                fresh.last_login_at = now
                if _hasher.check_needs_rehash(fresh.password_hash):
                    fresh.password_hash = _hasher.hash(password)
                record_in(s, "sign_in.password", actor=fresh.username, target=fresh.username, address=address, now=now)
        if fresh is None:
            raise AdminAuthError("wrong user name or password")
        return _public(fresh)

    # --- one-time login links --------------------------------------------------------------------
    def issue_link_token(
        self, username: str, ttl: float = LINK_TTL, now: float | None = None, *, actor: str = "cli"
    ) -> str:
        """A random token for a one-time login link; only its hash is stored."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        with self.db.write() as s:
            row = self._row(s, username)
            s.execute(delete(LoginTokenRow).where(LoginTokenRow.expires_at < now))
            s.add(LoginTokenRow(user_id=row.id, token_hash=_hash(token), expires_at=now + ttl))
            record_in(s, "user.login_link", actor=actor, target=username, now=now)
        return token

    def redeem_link_token(self, token: str, now: float | None = None, *, address: str = "") -> AdminUser:
        """Spend a login-link token; AdminAuthError when unknown, expired or already used."""
        now = time.time() if now is None else now
        if not token or len(token) > 200:
            raise AdminAuthError("this login link is not valid")
        with self.db.write() as s:
            link = s.scalar(select(LoginTokenRow).where(LoginTokenRow.token_hash == _hash(token)))
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
            record_in(s, "sign_in.link", actor=user.username, target=user.username, address=address, now=now)
            return _public(user)
