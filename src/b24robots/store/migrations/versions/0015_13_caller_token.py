"""the run-as user's token of a robot call, encrypted, kept with the call until its run is over

Revision ID: 0015_13
Revises: 0014_18
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_13"
down_revision = "0014_18"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invocations") as batch:
        batch.add_column(sa.Column("caller_token", sa.Text(), nullable=True))
        batch.add_column(sa.Column("caller_expires_at", sa.Float(), nullable=True))
    op.create_index(
        "ix_invocations_caller_expires_at",
        "invocations",
        ["caller_expires_at"],
        sqlite_where=sa.text("caller_expires_at IS NOT NULL"),
        postgresql_where=sa.text("caller_expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_invocations_caller_expires_at", table_name="invocations")
    with op.batch_alter_table("invocations") as batch:
        batch.drop_column("caller_expires_at")
        batch.drop_column("caller_token")
