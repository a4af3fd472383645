"""fold times

When each fold trained (UTC start and end): folds on a Ray cluster train at the same time, and their
intervals show it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fold_results") as batch_op:
        batch_op.add_column(sa.Column("started_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fold_results") as batch_op:
        batch_op.drop_column("finished_at")
        batch_op.drop_column("started_at")
