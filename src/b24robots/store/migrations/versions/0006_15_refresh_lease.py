"""a refresh lease on installations: one token refresh per portal across processes

Revision ID: 0006_15
Revises: 0005_21
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_15"
down_revision = "0005_21"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("installations") as batch:
        batch.add_column(sa.Column("refresh_holder", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("refresh_until", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("installations") as batch:
        batch.drop_column("refresh_until")
        batch.drop_column("refresh_holder")
