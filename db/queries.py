"""Read-only queries over runs and their results, shared by the run report and the dashboard."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ClassMetric, ClassThreshold, DataPull, Run, RunMetric
from db.training import SUCCEEDED


def previous_succeeded_run(*, session: Session, run_id: int) -> Run | None:
    return session.scalar(
        select(Run).where(Run.status == SUCCEEDED, Run.id < run_id).order_by(Run.id.desc()).limit(1)
    )


def run_metric(*, session: Session, run_id: int, split: str = "oof") -> RunMetric | None:
    return session.get(RunMetric, (run_id, split))


def data_pull(*, session: Session, pull_id: int | None) -> DataPull | None:
    return session.get(DataPull, pull_id) if pull_id is not None else None


def class_results(*, session: Session, run_id: int, split: str = "oof") -> list[dict[str, Any]]:
    """One row per class: its decision threshold and its metrics at that threshold."""
    rows = session.execute(
        select(ClassMetric, ClassThreshold)
        .join(
            ClassThreshold,
            (ClassThreshold.run_id == ClassMetric.run_id) & (ClassThreshold.label == ClassMetric.label),
        )
        .where(ClassMetric.run_id == run_id, ClassMetric.split == split)
        .order_by(ClassMetric.label)
    )
    return [
        {
            "label": metric.label,
            "threshold": threshold.threshold,
            "fallback": threshold.fallback,
            "fbeta": metric.fbeta,
            "precision": metric.precision,
            "recall": metric.recall,
            "support": metric.support,
            "average_precision": metric.average_precision,
        }
        for metric, threshold in rows
    ]
