"""Tables of the admin UI: admin users, their sessions, sign-in throttles, one-time login links, the audit log.

Ids of users and audit entries are never reused (`AUTOINCREMENT` on SQLite, a sequence on PostgreSQL),
so nothing that still names an old id can ever point at a newer row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from b24robots.store.models import Base


class AdminUserRow(Base):
    """A person who may sign in to the admin UI. Only an argon2 hash of the password is kept."""

    __tablename__ = "admin_users"
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float)
    last_login_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AdminSessionRow(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored. Deleting the row
    (sign-out, sign-out everywhere, password change, account deletion) ends the session at once."""

    __tablename__ = "admin_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(String(64), default="")


class LoginThrottleRow(Base):
    """Failed sign-ins of one key (an account, an account on one device, or a client address; hashed).

    `blocked_until` is when the next password check may run: 0 for the first free tries, then
    growing with every failure. An attempt is counted here before its password is checked."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[float] = mapped_column(Float, default=0.0)
    blocked_until: Mapped[float] = mapped_column(Float, default=0.0)


class LoginTokenRow(Base):
    """A one-time login link: only the SHA-256 of the token is stored; used once, then spent."""

    __tablename__ = "login_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditRow(Base):
    """Who did what, when and from where. No foreign keys: an entry outlives the user or object it names."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_action", "action"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
