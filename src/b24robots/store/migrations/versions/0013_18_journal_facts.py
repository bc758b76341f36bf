"""the journal keeps every fact of a run: what ran (the stored version or the module robot and its spec
fingerprint) and each attempt's log lines and error; connection and REST calls name their attempt

Revision ID: 0013_18
Revises: 0012_16
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_18"
down_revision = "0012_16"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invocations") as batch:
        batch.add_column(sa.Column("ran", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("attempt_log", sa.JSON(), nullable=True))
    with op.batch_alter_table("connection_calls") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connection_calls") as batch:
        batch.drop_column("attempt")
    with op.batch_alter_table("invocations") as batch:
        batch.drop_column("attempt_log")
        batch.drop_column("ran")
