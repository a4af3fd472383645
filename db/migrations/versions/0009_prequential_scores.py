"""prequential scores

The champion's score on each pull's new labeled samples, predicted before any model trained on them,
with per-class detail and the label-frequency shift of the pull.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prequential_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("pull_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("champion_run_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=20), nullable=False),
        sa.Column("beta", sa.Double(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("label_shift", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pull_id"],
            ["data_pulls.id"],
            name=op.f("fk_prequential_scores_pull_id_data_pulls"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_prequential_scores_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["champion_run_id"],
            ["runs.id"],
            name=op.f("fk_prequential_scores_champion_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prequential_scores")),
    )
    with op.batch_alter_table("prequential_scores") as batch_op:
        batch_op.create_index(batch_op.f("ix_prequential_scores_pull_id"), ["pull_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prequential_scores") as batch_op:
        batch_op.drop_index(batch_op.f("ix_prequential_scores_pull_id"))
    op.drop_table("prequential_scores")
