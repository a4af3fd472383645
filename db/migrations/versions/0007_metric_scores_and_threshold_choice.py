"""metric scores and threshold choice

A run's metrics carry the configured metric: its honest (cross-fitted) score, its in-sample score and
two baselines on the same samples; a class's thresholds carry the per-class candidate beside the one
in use; a run records which strategy it chose and why.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run_metrics") as batch_op:
        batch_op.add_column(sa.Column("metric", sa.String(length=20), server_default="fbeta_samples", nullable=False))
        batch_op.add_column(sa.Column("score", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("score_in_sample", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("baseline_all", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("baseline_prior", sa.Double(), nullable=True))
    op.execute("UPDATE run_metrics SET score = fbeta_samples, score_in_sample = fbeta_samples")
    with op.batch_alter_table("class_thresholds") as batch_op:
        batch_op.add_column(sa.Column("per_class_threshold", sa.Double(), nullable=True))
    op.execute("UPDATE class_thresholds SET per_class_threshold = threshold")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("threshold_strategy", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("threshold_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("threshold_reason")
        batch_op.drop_column("threshold_strategy")
    with op.batch_alter_table("class_thresholds") as batch_op:
        batch_op.drop_column("per_class_threshold")
    with op.batch_alter_table("run_metrics") as batch_op:
        for column in ("baseline_prior", "baseline_all", "score_in_sample", "score", "metric"):
            batch_op.drop_column(column)
