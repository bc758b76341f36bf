"""Tables of connections: their values (secrets encrypted) and the journal of outbound calls."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from b24robots.store.models import Base


class ConnectionRow(Base):
    """A connection's values: the global row has member_id ''; a portal's override names its member_id."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("name", "member_id", name="uq_connections_name_member"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(64), default="")
    kind: Mapped[str] = mapped_column(String(8))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    secrets_enc: Mapped[str] = mapped_column(Text, default="")  # Fernet of a JSON object, same key as tokens
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ConnectionCallRow(Base):
    """One outbound call of a run: never a secret; bodies only when the connection keeps them."""

    __tablename__ = "connection_calls"
    __table_args__ = (Index("ix_connection_calls_connection_at", "connection", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invocation_id: Mapped[int | None] = mapped_column(
        ForeignKey("invocations.id", ondelete="CASCADE"), nullable=True, index=True
    )
    connection: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    method: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(255))
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[float] = mapped_column(Float)
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    request_body: Mapped[str] = mapped_column(Text, default="")
    response_body: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)  # which attempt of the run made it
