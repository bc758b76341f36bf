"""installations: the portal's language (LANGUAGE_ID) and a per-installation date culture override

Revision ID: 0007_13
Revises: 0006_15
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_13"
down_revision = "0006_15"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("installations") as batch:
        batch.add_column(sa.Column("language", sa.String(length=8), nullable=False, server_default=""))
        batch.add_column(sa.Column("culture", sa.String(length=8), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("installations") as batch:
        batch.drop_column("culture")
        batch.drop_column("language")
