"""connections (secrets encrypted) and the journal of outbound calls

Revision ID: 0005_21
Revises: 0004_17
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_21"
down_revision = "0004_17"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("secrets_enc", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
        sa.UniqueConstraint("name", "member_id", name="uq_connections_name_member"),
    )
    op.create_table(
        "connection_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invocation_id", sa.Integer(), nullable=True),
        sa.Column("connection", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("request_body", sa.Text(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invocation_id"],
            ["invocations.id"],
            name=op.f("fk_connection_calls_invocation_id_invocations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connection_calls")),
    )
    with op.batch_alter_table("connection_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_connection_calls_invocation_id"), ["invocation_id"], unique=False)
        batch_op.create_index("ix_connection_calls_connection_at", ["connection", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("connection_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_connection_calls_connection_at")
        batch_op.drop_index(batch_op.f("ix_connection_calls_invocation_id"))
    op.drop_table("connection_calls")
    op.drop_table("connections")
