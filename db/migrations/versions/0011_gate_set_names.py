"""gate set names

One term for the gate set in code, schema, UI and docs: the columns and split values that said
"holdout" say "gate set" (samples.is_fixed_holdout -> pinned_to_gate_set, fold_sets.n_holdout ->
n_gate_set, split "holdout" -> "gate_set" in predictions, class_metrics and run_metrics).

Left as written: sample_events.detail, an audit trail in words of what happened then ("holdout
False -> True"), which no code reads back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (  # table, name before this revision, name after, type
    ("samples", "is_fixed_holdout", "pinned_to_gate_set", sa.Boolean()),
    ("fold_sets", "n_holdout", "n_gate_set", sa.Integer()),
)
SPLIT_BEFORE, SPLIT_AFTER = "holdout", "gate_set"
SPLIT_TABLES = ("predictions", "class_metrics", "run_metrics")


def rename(*, backwards: bool) -> None:
    """Columns and split values from their names before this revision to those after, or back."""
    for table, before, after, column_type in COLUMNS:
        old, new = (after, before) if backwards else (before, after)
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                old, new_column_name=new, existing_type=column_type, existing_nullable=False
            )
    old, new = (SPLIT_AFTER, SPLIT_BEFORE) if backwards else (SPLIT_BEFORE, SPLIT_AFTER)
    for table in SPLIT_TABLES:
        op.execute(
            sa.text(f"UPDATE {table} SET split = :new WHERE split = :old").bindparams(new=new, old=old)
        )


def upgrade() -> None:
    rename(backwards=False)


def downgrade() -> None:
    rename(backwards=True)
