"""perceptual hash

Samples record their image's perceptual hash (pHash, 64 bits in hex): near-duplicate images are
grouped by it so that a group shares one fold. Samples pulled before get theirs at the next pull.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch_op:
        batch_op.add_column(sa.Column("perceptual_hash", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch_op:
        batch_op.drop_column("perceptual_hash")
