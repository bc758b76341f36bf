"""processes with heartbeats, the owner process of each lease, an index for pruning old entries

Revision ID: 0009_15
Revises: 0008_12
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_15"
down_revision = "0008_12"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "processes",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("incarnation", sa.String(length=1024), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
    )
    op.create_index(op.f("ix_processes_incarnation"), "processes", ["incarnation"])
    op.create_index(op.f("ix_processes_heartbeat_at"), "processes", ["heartbeat_at"])
    with op.batch_alter_table("invocations") as batch:
        batch.add_column(sa.Column("lease_process", sa.String(length=128), nullable=True))
        batch.create_index("ix_invocations_lease_process", ["lease_process"])
        batch.create_index("ix_invocations_state_finished_at", ["state", "finished_at"])


def downgrade() -> None:
    with op.batch_alter_table("invocations") as batch:
        batch.drop_index("ix_invocations_state_finished_at")
        batch.drop_index("ix_invocations_lease_process")
        batch.drop_column("lease_process")
    op.drop_index(op.f("ix_processes_heartbeat_at"), table_name="processes")
    op.drop_index(op.f("ix_processes_incarnation"), table_name="processes")
    op.drop_table("processes")
