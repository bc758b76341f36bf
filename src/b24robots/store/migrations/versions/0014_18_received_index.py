"""an index for the dashboard and /metrics: robot calls by the time they arrived (store/stats.py)

Revision ID: 0014_18
Revises: 0013_18
"""

from alembic import op

revision = "0014_18"
down_revision = "0013_18"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_invocations_kind_received_at", "invocations", ["kind", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_invocations_kind_received_at", table_name="invocations")
