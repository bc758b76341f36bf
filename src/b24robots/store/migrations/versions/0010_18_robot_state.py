"""a stored robot's state: active, disabled (kept, not registered, calls answered) or deleted (history)

Revision ID: 0010_18
Revises: 0009_15
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_18"
down_revision = "0009_15"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("robots") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False, server_default="active"))


def downgrade() -> None:
    with op.batch_alter_table("robots") as batch:
        batch.drop_column("state")
