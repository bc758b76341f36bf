"""the dashboard's rollup: robot calls of hours that have ended, folded in all, per robot and per portal with a
run-time histogram (store/rollup.py), and triggers that unfold an hour whenever one of its calls changes

Revision ID: 0016_18
Revises: 0015_13
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_18"
down_revision = "0015_13"
branch_labels = None
depends_on = None

# the columns whose change alters an hour's numbers (store/stats.py: calls, failures, dead, run time)
_WATCHED = ("state", "error", "started_at", "finished_at", "received_at", "kind", "robot_code", "installation_id")


# an hour's number is received_at // 3600, as store/rollup.py folds it; a division may round up to the
# next hour a time a hair before it, so the second before an hour starts unfolds the hour before too
def _sqlite_unfold(row: str) -> str:
    hour = f"CAST({row}.received_at / 3600 AS INTEGER)"
    before = f"CAST(({row}.received_at - 1) / 3600 AS INTEGER)"
    return f"DELETE FROM stats_hours WHERE hour BETWEEN {before} AND {hour};"  # noqa: S608 (our constants)


def _pg_unfold(row: str) -> str:
    hour = f"floor({row}.received_at / 3600)::integer"
    before = f"floor(({row}.received_at - 1) / 3600)::integer"
    return f"DELETE FROM stats_hours WHERE hour BETWEEN {before} AND {hour};"  # noqa: S608 (our constants)


_CHANGED_SQLITE = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _WATCHED)
_CHANGED_PG = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in _WATCHED)

_SQLITE = [
    f"""CREATE TRIGGER stats_unfold_insert AFTER INSERT ON invocations WHEN NEW.kind = 'robot'
    BEGIN {_sqlite_unfold("NEW")} END""",
    f"""CREATE TRIGGER stats_unfold_update AFTER UPDATE OF {", ".join(_WATCHED)} ON invocations
    WHEN (OLD.kind = 'robot' OR NEW.kind = 'robot') AND ({_CHANGED_SQLITE})
    BEGIN {_sqlite_unfold("OLD")} {_sqlite_unfold("NEW")} END""",
    f"""CREATE TRIGGER stats_unfold_delete AFTER DELETE ON invocations WHEN OLD.kind = 'robot'
    BEGIN {_sqlite_unfold("OLD")} END""",
]

_POSTGRES = [
    # VOLATILE (the default): each DELETE takes a fresh snapshot, so it sees a fold committed while the
    # row change waited for the fold's row locks (store/rollup.py locks the hour's rows FOR SHARE)
    f"""CREATE FUNCTION stats_unfold() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN {_pg_unfold("OLD")} END IF;
        IF TG_OP <> 'DELETE' THEN {_pg_unfold("NEW")} END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER stats_unfold_insert AFTER INSERT ON invocations FOR EACH ROW
    WHEN (NEW.kind = 'robot') EXECUTE FUNCTION stats_unfold()""",
    f"""CREATE TRIGGER stats_unfold_update AFTER UPDATE OF {", ".join(_WATCHED)} ON invocations FOR EACH ROW
    WHEN ((OLD.kind = 'robot' OR NEW.kind = 'robot') AND ({_CHANGED_PG})) EXECUTE FUNCTION stats_unfold()""",
    """CREATE TRIGGER stats_unfold_delete AFTER DELETE ON invocations FOR EACH ROW
    WHEN (OLD.kind = 'robot') EXECUTE FUNCTION stats_unfold()""",
]


def upgrade() -> None:
    op.create_table(
        "stats_hours",
        sa.Column("hour", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("folded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("hour", name="pk_stats_hours"),
    )
    op.create_table(
        "stats_rollup",
        sa.Column("hour", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("grouping", sa.String(8), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("dead", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "grouping", "key", name="pk_stats_rollup"),
    )
    for statement in _SQLITE if op.get_bind().dialect.name == "sqlite" else _POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    for name in ("stats_unfold_insert", "stats_unfold_update", "stats_unfold_delete"):
        op.execute(
            f"DROP TRIGGER IF EXISTS {name}" + ("" if op.get_bind().dialect.name == "sqlite" else " ON invocations")
        )
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS stats_unfold()")
    op.drop_table("stats_rollup")
    op.drop_table("stats_hours")
