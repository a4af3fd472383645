"""sample lifecycle, fold resume, lock holders

Samples get a status (active, quarantined, retired) with its reason and a version, and an event
trail; rejected rows are recorded once (fingerprint); pulls count what they quarantined, retired and
restored; fold results carry a fingerprint for resume; the training lock names its holder and beats.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sample_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("pull_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pull_id"],
            ["data_pulls.id"],
            name=op.f("fk_sample_events_pull_id_data_pulls"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sample_id"], ["samples.id"], name=op.f("fk_sample_events_sample_id_samples"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sample_events")),
    )
    with op.batch_alter_table("sample_events") as batch_op:
        batch_op.create_index(batch_op.f("ix_sample_events_pull_id"), ["pull_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sample_events_sample_id"), ["sample_id"], unique=False)

    with op.batch_alter_table("samples") as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), server_default="active", nullable=False)
        )
        batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch_op.create_index(batch_op.f("ix_samples_status"), ["status"], unique=False)

    with op.batch_alter_table("data_pulls") as batch_op:
        for column in ("n_quarantined", "n_retired", "n_restored"):
            batch_op.add_column(sa.Column(column, sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("new_labels", sa.JSON(), server_default="[]", nullable=False))

    with op.batch_alter_table("rejected_rows") as batch_op:
        batch_op.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
    op.execute("UPDATE rejected_rows SET fingerprint = 'recorded-before-0005-' || id")
    with op.batch_alter_table("rejected_rows") as batch_op:
        batch_op.alter_column("fingerprint", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_rejected_rows_fingerprint"), ["fingerprint"])

    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("notes", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("warm_start_from", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_runs_warm_start_from_runs"),
            "runs",
            ["warm_start_from"],
            ["id"],
            ondelete="SET NULL",
        )

    with op.batch_alter_table("fold_results") as batch_op:
        batch_op.add_column(sa.Column("predictions_path", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(sa.Column("fingerprint", sa.String(length=64), server_default="", nullable=False))
        batch_op.add_column(sa.Column("reused_from_run_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_fold_results_fingerprint"), ["fingerprint"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_fold_results_reused_from_run_id_runs"),
            "runs",
            ["reused_from_run_id"],
            ["id"],
            ondelete="SET NULL",
        )

    with op.batch_alter_table("training_lock") as batch_op:
        batch_op.alter_column("run_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("holder", sa.String(length=100), server_default="", nullable=False))
        batch_op.add_column(sa.Column("host", sa.String(length=255), server_default="", nullable=False))
        batch_op.add_column(sa.Column("pid", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column(
                "heartbeat_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False
            )
        )


def downgrade() -> None:
    op.execute("DELETE FROM training_lock WHERE run_id IS NULL")
    with op.batch_alter_table("training_lock") as batch_op:
        for column in ("heartbeat_at", "pid", "host", "holder"):
            batch_op.drop_column(column)
        batch_op.alter_column("run_id", existing_type=sa.Integer(), nullable=False)

    with op.batch_alter_table("fold_results") as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_fold_results_reused_from_run_id_runs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_fold_results_fingerprint"))
        for column in ("reused_from_run_id", "fingerprint", "predictions_path"):
            batch_op.drop_column(column)

    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_runs_warm_start_from_runs"), type_="foreignkey")
        batch_op.drop_column("warm_start_from")
        batch_op.drop_column("notes")

    with op.batch_alter_table("rejected_rows") as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_rejected_rows_fingerprint"), type_="unique")
        batch_op.drop_column("fingerprint")

    with op.batch_alter_table("data_pulls") as batch_op:
        for column in ("new_labels", "n_restored", "n_retired", "n_quarantined"):
            batch_op.drop_column(column)

    with op.batch_alter_table("samples") as batch_op:
        batch_op.drop_index(batch_op.f("ix_samples_status"))
        for column in ("version", "status_reason", "status"):
            batch_op.drop_column(column)

    op.drop_table("sample_events")
