"""a journal of syncs: what each sync of a portal planned, made and skipped

Revision ID: 0011_13
Revises: 0010_18
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_13"
down_revision = "0010_18"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "syncs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "installation_id",
            sa.Integer(),
            sa.ForeignKey("installations.id", ondelete="CASCADE", name="fk_syncs_installation_id_installations"),
            nullable=False,
        ),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_syncs"),
    )
    op.create_index("ix_syncs_installation_started", "syncs", ["installation_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_syncs_installation_started", table_name="syncs")
    op.drop_table("syncs")
