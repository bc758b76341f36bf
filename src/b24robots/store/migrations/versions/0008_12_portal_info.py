"""what the portal told us about its plan (licence) and whether limits were set by hand

Revision ID: 0008_12
Revises: 0007_13
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_12"
down_revision = "0007_13"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("installations") as batch:
        batch.add_column(sa.Column("license", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("limits_manual", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("installations") as batch:
        batch.drop_column("limits_manual")
        batch.drop_column("license")
