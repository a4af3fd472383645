"""Read-only queries over runs and their results, shared by the run report and the dashboard."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased, selectinload

from foldwise.db.models import (
    ACTIVE,
    ClassMetric,
    ClassThreshold,
    DataPull,
    Epoch,
    FoldLabelCount,
    Label,
    Prediction,
    RejectedRow,
    Run,
    RunMetric,
    Sample,
    SampleLabel,
)
from foldwise.db.training import SUCCEEDED


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
            "per_class_threshold": threshold.per_class_threshold,
            "fbeta": metric.fbeta,
            "precision": metric.precision,
            "recall": metric.recall,
            "support": metric.support,
            "average_precision": metric.average_precision,
        }
        for metric, threshold in rows
    ]


def runs_overview(*, session: Session) -> list[dict[str, Any]]:
    """Every run with its configured metric's scores (out of fold: cross-fitted; and on the gate set):
    the rows of the runs table and charts, and `foldwise models`."""
    oof, gate_set = aliased(RunMetric), aliased(RunMetric)
    rows = session.execute(
        select(
            Run.id,
            Run.status,
            Run.reason,
            Run.started_at,
            Run.finished_at,
            Run.dataset_size,
            Run.storage_bytes,
            Run.beta,
            oof.metric,
            oof.score.label("score_oof"),
            gate_set.score.label("score_gate_set"),
        )
        .outerjoin(oof, (oof.run_id == Run.id) & (oof.split == "oof"))
        .outerjoin(gate_set, (gate_set.run_id == Run.id) & (gate_set.split == "gate_set"))
        .order_by(Run.id)
    )
    return [dict(row._mapping) for row in rows]


def epochs(*, session: Session, run_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Epoch).where(Epoch.run_id == run_id).order_by(Epoch.fold, Epoch.stage, Epoch.epoch)
    )
    return [
        {
            "fold": e.fold,
            "stage": e.stage,
            "size": e.size,
            "epoch": e.epoch,
            "train_loss": e.train_loss,
            "valid_loss": e.valid_loss,
            "fbeta": e.fbeta,
            "seconds": e.seconds,
        }
        for e in rows
    ]


def threshold_curve(*, session: Session, run_id: int, label: str) -> ClassThreshold | None:
    return session.get(ClassThreshold, (run_id, label))


def fold_label_counts(*, session: Session, fold_set_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(FoldLabelCount.fold, Label.name, FoldLabelCount.count)
        .join(Label, Label.id == FoldLabelCount.label_id)
        .where(FoldLabelCount.fold_set_id == fold_set_id)
        .order_by(Label.name, FoldLabelCount.fold)
    )
    return [{"fold": fold, "label": name, "count": count} for fold, name, count in rows]


def data_pulls(*, session: Session) -> list[dict[str, Any]]:
    pulls = session.scalars(select(DataPull).order_by(DataPull.id))
    return [
        {
            "pull": p.id,
            "started_at": p.started_at,
            "source": p.source,
            "added": p.n_added,
            "updated": p.n_updated,
            "unchanged": p.n_unchanged,
            "rejected": p.n_rejected,
            "quarantined": p.n_quarantined,
            "retired": p.n_retired,
            "restored": p.n_restored,
            "new_labels": p.new_labels,
            "dataset_size": p.dataset_size,
        }
        for p in pulls
    ]


def label_frequencies(*, session: Session) -> dict[str, int]:
    """Active samples per label."""
    rows = session.execute(
        select(Label.name, func.count(SampleLabel.sample_id))
        .join(SampleLabel, SampleLabel.label_id == Label.id)
        .join(Sample, (Sample.id == SampleLabel.sample_id) & (Sample.status == ACTIVE))
        .group_by(Label.name)
        .order_by(Label.name)
    )
    return dict(rows.tuples().all())


def label_cooccurrence(*, session: Session) -> list[tuple[str, str, int]]:
    """(label a, label b, active samples with both) for every pair that occurs, a != b, counted in SQL."""
    first, second = aliased(SampleLabel), aliased(SampleLabel)
    label_a, label_b = aliased(Label), aliased(Label)
    rows = session.execute(
        select(label_a.name, label_b.name, func.count())
        .select_from(first)
        .join(Sample, (Sample.id == first.sample_id) & (Sample.status == ACTIVE))
        .join(second, (second.sample_id == first.sample_id) & (second.label_id != first.label_id))
        .join(label_a, label_a.id == first.label_id)
        .join(label_b, label_b.id == second.label_id)
        .group_by(label_a.name, label_b.name)
    )
    return [tuple(row) for row in rows]


def rejected_rows(*, session: Session, limit: int = 500) -> list[dict[str, Any]]:
    rows = session.scalars(select(RejectedRow).order_by(RejectedRow.id.desc()).limit(limit))
    return [
        {"pull": r.pull_id, "file": r.file, "line": r.line, "id": r.sample_key, "reason": r.reason}
        for r in rows
    ]


def samples_with_label(*, session: Session, label: str | None, limit: int) -> list[dict[str, Any]]:
    query = (
        select(Sample)
        .where(Sample.status == ACTIVE)
        .order_by(Sample.id.desc())
        .limit(limit)
        .options(selectinload(Sample.labels))
    )
    if label:
        query = query.where(Sample.labels.any(Label.name == label))
    return [
        {"key": s.key, "image_path": s.image_path, "labels": [lab.name for lab in s.labels]}
        for s in session.scalars(query)
    ]


def inactive_samples(*, session: Session) -> list[dict[str, Any]]:
    """Quarantined and retired samples, with why and since which pull: out of the data set."""
    rows = session.scalars(select(Sample).where(Sample.status != ACTIVE).order_by(Sample.status, Sample.key))
    return [
        {
            "id": s.key,
            "status": s.status,
            "reason": s.status_reason,
            "since pull": s.updated_pull_id,
            "image": s.image_path,
        }
        for s in rows
    ]


def gate_set_probabilities(*, session: Session, run_id: int) -> dict[int, list[float]]:
    """A run's recorded gate set probabilities by sample id."""
    rows = session.execute(
        select(Prediction.sample_id, Prediction.probabilities).where(
            Prediction.run_id == run_id, Prediction.split == "gate_set"
        )
    )
    return dict(rows.tuples().all())


def run_predictions(*, session: Session, run_id: int, split: str = "oof") -> list[dict[str, Any]]:
    """A run's predictions with each sample's image and true labels (one run, never the whole table)."""
    rows = session.execute(
        select(Prediction.probabilities, Prediction.fold, Sample)
        .join(Sample, Sample.id == Prediction.sample_id)
        .where(Prediction.run_id == run_id, Prediction.split == split)
        .options(selectinload(Sample.labels))
        .order_by(Sample.id)
    )
    return [
        {
            "key": sample.key,
            "image_path": sample.image_path,
            "labels": [lab.name for lab in sample.labels],
            "fold": fold,
            "probabilities": probabilities,
        }
        for probabilities, fold, sample in rows
    ]


def run_metrics(*, session: Session, run_ids: list[int]) -> list[dict[str, Any]]:
    """Overall metrics of these runs on every split they were scored on."""
    rows = session.scalars(
        select(RunMetric).where(RunMetric.run_id.in_(run_ids)).order_by(RunMetric.run_id, RunMetric.split)
    )
    return [
        {
            "run_id": m.run_id,
            "split": m.split,
            "metric": m.metric,
            "score": m.score,
            "score_in_sample": m.score_in_sample,
            "baseline_all": m.baseline_all,
            "baseline_prior": m.baseline_prior,
            "n_samples": m.n_samples,
            "fbeta_samples": m.fbeta_samples,
            "fbeta_samples_global": m.fbeta_samples_global,
            "f1_macro": m.f1_macro,
            "mean_average_precision": m.mean_average_precision,
            "accuracy_multi": m.accuracy_multi,
        }
        for m in rows
    ]
