"""Tables. Times are unix seconds (float) so SQLite and PostgreSQL compare them the same way."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RobotRow(Base):
    """A robot in the register. Its code and parameters live in its versions."""

    __tablename__ = "robots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(16))  # "stored" | "adopted"
    active_version: Mapped[int] = mapped_column(Integer)
    # "active" | "disabled" (kept, not registered on portals) | "deleted" (rows kept as history)
    state: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class RobotVersionRow(Base):
    """An append-only version: the robot document (parameters) and its source code."""

    __tablename__ = "robot_versions"
    __table_args__ = (UniqueConstraint("robot_id", "number", name="uq_robot_versions_robot_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    robot_id: Mapped[int] = mapped_column(ForeignKey("robots.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(255))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


class TriggerRow(Base):
    """A CRM automation trigger declared in the register (not in Python). Its NAME lives in its versions."""

    __tablename__ = "triggers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(128))
    # the CODE lowercased: the portal compares trigger codes case-insensitively, so the register does too
    code_key: Mapped[str] = mapped_column(String(128), unique=True)
    active_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="active")  # "active" | "deleted" (rows kept as history)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class TriggerVersionRow(Base):
    """An append-only version of a register trigger: its document ({kind: trigger, code, name})."""

    __tablename__ = "trigger_versions"
    __table_args__ = (UniqueConstraint("trigger_id", "number", name="uq_trigger_versions_trigger_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger_id: Mapped[int] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(255))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


class InstallationRow(Base):
    """One portal that installed the application. Tokens are encrypted; the application token is hashed."""

    __tablename__ = "installations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), unique=True)
    domain: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(24))  # active | needs_reinstall | uninstalled
    status_message: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[str] = mapped_column(Text, default="")
    app_status: Mapped[str] = mapped_column(String(4), default="")
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    client_endpoint: Mapped[str] = mapped_column(String(1000))
    server_endpoint: Mapped[str] = mapped_column(String(1000))
    access_token_enc: Mapped[str] = mapped_column(Text, default="")
    refresh_token_enc: Mapped[str] = mapped_column(Text, default="")
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    application_token_hash: Mapped[str] = mapped_column(String(64), default="")
    rate: Mapped[float] = mapped_column(Float, default=2.0)
    burst: Mapped[int] = mapped_column(Integer, default=50)
    limits_manual: Mapped[bool] = mapped_column(Boolean, default=False)  # set by an admin: plans do not change them
    license: Mapped[str] = mapped_column(String(64), default="")  # LICENSE_FAMILY/LICENSE_TYPE of app.info
    limiter_tat: Mapped[float] = mapped_column(Float, default=0.0)
    # who refreshes the token pair right now, and until when that claim holds (one refresh at a time
    # across processes; an expired claim is free again)
    refresh_holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    refresh_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    sync_status: Mapped[str] = mapped_column(String(24), default="never")
    sync_error: Mapped[str] = mapped_column(Text, default="")
    synced_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # LANGUAGE_ID of ONAPPINSTALL / app.info; `culture` overrides it for reading dates ('' = follow language)
    language: Mapped[str] = mapped_column(String(8), default="", server_default="")
    culture: Mapped[str] = mapped_column(String(8), default="", server_default="")


class RegistrationRow(Base):
    """What was last registered for a robot on a portal (sync state per portal)."""

    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("installation_id", "code", name="uq_registrations_installation_code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    installation_id: Mapped[int] = mapped_column(ForeignKey("installations.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[float] = mapped_column(Float)


class SyncRow(Base):
    """One sync of a portal: when, who started it and each change it planned, made or skipped."""

    __tablename__ = "syncs"
    __table_args__ = (Index("ix_syncs_installation_started", "installation_id", "started_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    installation_id: Mapped[int] = mapped_column(ForeignKey("installations.id", ondelete="CASCADE"))
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float] = mapped_column(Float)
    origin: Mapped[str] = mapped_column(String(16))  # install | cli | ui | robot | api
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str] = mapped_column(Text, default="")
    # [{"action", "kind", "code", "note", "done"}]: done = the change was made on the portal
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    warnings: Mapped[list[str]] = mapped_column(JSON)


class InvocationRow(Base):
    """One robot call from a portal: the journal entry and the queue item at once."""

    __tablename__ = "invocations"
    __table_args__ = (
        Index("ix_invocations_state_run_after", "state", "run_after"),
        Index("ix_invocations_installation_state", "installation_id", "state"),
        Index("ix_invocations_deliver_after", "deliver_after"),
        Index("ix_invocations_robot_code", "robot_code"),
        Index("ix_invocations_lease_process", "lease_process"),
        Index("ix_invocations_state_finished_at", "state", "finished_at"),
        Index("ix_invocations_kind_received_at", "kind", "received_at"),  # store/stats.py
        # only rows still holding a run-as user's token: what the expiry sweep reads (store/caller_tokens.py)
        Index(
            "ix_invocations_caller_expires_at",
            "caller_expires_at",
            sqlite_where=text("caller_expires_at IS NOT NULL"),
            postgresql_where=text("caller_expires_at IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_token: Mapped[str] = mapped_column(String(512), unique=True)
    installation_id: Mapped[int] = mapped_column(ForeignKey("installations.id", ondelete="CASCADE"))
    robot_code: Mapped[str] = mapped_column(String(128))
    origin: Mapped[str] = mapped_column(String(16), default="module")
    robot_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    workflow_id: Mapped[str] = mapped_column(String(128), default="")
    document_id: Mapped[list[str]] = mapped_column(JSON)
    document_type: Mapped[list[str]] = mapped_column(JSON)
    use_subscription: Mapped[bool] = mapped_column(default=True)
    timeout_duration: Mapped[int] = mapped_column(Integer, default=0)
    portal_ts: Mapped[int] = mapped_column(Integer, default=0)
    auth_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    log: Mapped[list[str]] = mapped_column(JSON)
    log_message: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[float] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the process (processes.id) whose worker or sender holds the lease: reclaimed when it stops beating
    lease_process: Mapped[str | None] = mapped_column(String(128), nullable=True)
    deliver_after: Mapped[float | None] = mapped_column(Float, nullable=True)  # set while an answer is owed
    deliver_attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deadline_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    replay_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # "robot": a robot call from the portal; "call": an outbound call we owe the portal (a trigger fire,
    # a workflow start), delivered by the sender like an answer
    kind: Mapped[str] = mapped_column(String(16), default="robot", server_default="robot")
    # what ran at the last attempt: {"origin": "stored", "version_id", "version", "hash"} or
    # {"origin": "module", "module": "pkg.mod.func", "fingerprint": <spec fingerprint>}
    ran: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # every finished attempt, oldest first: {"attempt", "started_at", "finished_at", "outcome", "error",
    # "log", "ran"}; `log` above stays the last attempt's lines (what the workflow log is sent)
    attempt_log: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # the run-as user's access token that came with the call, encrypted (store/crypto.py), and when it
    # expires; both NULL once the run is over for good or the token expired (store/caller_tokens.py)
    caller_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    caller_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class StatsHourRow(Base):
    """An hour (unix seconds // 3600) whose robot calls are folded into `stats_rollup` (store/rollup.py).

    Triggers on `invocations` (migration 0016_18) delete an hour's row whenever a robot call of that
    hour is inserted, changes its outcome or run time, or is deleted, so a folded hour is always
    folded from the rows as they are now. A migration that rebuilds `invocations` on SQLite (batch
    mode) drops the triggers and must create them again."""

    __tablename__ = "stats_hours"
    hour: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    folded_at: Mapped[float] = mapped_column(Float)


class StatsRollupRow(Base):
    """The robot calls of one folded hour: in all (`grouping` "all", `key` ""), of one robot ("robot",
    its code) or of one portal ("portal", the installation id): counts and a run-time histogram."""

    __tablename__ = "stats_rollup"
    hour: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    grouping: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    calls: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    dead: Mapped[int] = mapped_column(Integer)
    # finished runs per histogram bin (store/rollup.py), a JSON list [bin, count, bin, count, ...]
    runs: Mapped[str] = mapped_column(Text, default="[]")


class ProcessRow(Base):
    """A running `serve` or `worker` process and its heartbeat (leases name it in `lease_process`)."""

    __tablename__ = "processes"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    # what a restart of the same process shares with it: role, host and data dir or worker name
    incarnation: Mapped[str] = mapped_column(String(1024), index=True)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


class ApiKeyRow(Base):
    """A key for the inbound API: hashed, scoped to one installation and to what it may fire."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    installation_id: Mapped[int] = mapped_column(ForeignKey("installations.id", ondelete="CASCADE"))
    triggers: Mapped[list[str]] = mapped_column(JSON)
    templates: Mapped[list[str]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
