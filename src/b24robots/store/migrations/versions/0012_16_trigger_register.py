"""triggers in the register: CRM automation triggers declared in the UI/CLI, with append-only versions

Revision ID: 0012_16
Revises: 0011_13
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_16"
down_revision = "0011_13"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=128), nullable=False),
        sa.Column("code_key", sa.String(length=128), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_triggers"),
        sa.UniqueConstraint("code_key", name="uq_triggers_code_key"),
    )
    op.create_table(
        "trigger_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "trigger_id",
            sa.Integer(),
            sa.ForeignKey("triggers.id", ondelete="CASCADE", name="fk_trigger_versions_trigger_id_triggers"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_versions"),
        sa.UniqueConstraint("trigger_id", "number", name="uq_trigger_versions_trigger_number"),
    )
    op.create_index("ix_trigger_versions_trigger_id", "trigger_versions", ["trigger_id"])


def downgrade() -> None:
    op.drop_index("ix_trigger_versions_trigger_id", table_name="trigger_versions")
    op.drop_table("trigger_versions")
    op.drop_table("triggers")
