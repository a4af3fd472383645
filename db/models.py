"""ORM models: what Foldwise records. The schema itself is created only by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Index, MetaData, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so that migrations can alter them on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Double, as SQLAlchemy 2.1 maps `float` and the migrations say; 2.0 would map it to Float.
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, float: Double}


class Label(Base):
    """The vocabulary: one row per label name ever seen."""

    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class DataPull(Base):
    """One pull of the source: what arrived and what became of it."""

    __tablename__ = "data_pulls"
    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(Text)
    n_rows: Mapped[int] = mapped_column(default=0)
    n_added: Mapped[int] = mapped_column(default=0)
    n_updated: Mapped[int] = mapped_column(default=0)
    n_unchanged: Mapped[int] = mapped_column(default=0)
    n_rejected: Mapped[int] = mapped_column(default=0)  # rows rejected for the first time in this pull
    n_quarantined: Mapped[int] = mapped_column(default=0)
    n_retired: Mapped[int] = mapped_column(default=0)
    n_restored: Mapped[int] = mapped_column(default=0)
    new_labels: Mapped[list[Any]] = mapped_column(default=list)  # labels first seen in this pull
    dataset_version: Mapped[str] = mapped_column(String(64))
    dataset_size: Mapped[int] = mapped_column(default=0)  # active samples
    rejected_rows: Mapped[list[RejectedRow]] = relationship(back_populates="pull")


class RejectedRow(Base):
    """A label-file row (or a whole file) that could not be used, recorded once: at the first pull
    that met it (`fingerprint`: the file, the row's text and the reason)."""

    __tablename__ = "rejected_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    pull_id: Mapped[int] = mapped_column(ForeignKey("data_pulls.id", ondelete="CASCADE"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    file: Mapped[str] = mapped_column(Text)
    line: Mapped[int]
    sample_key: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    pull: Mapped[DataPull] = relationship(back_populates="rejected_rows")


ACTIVE, QUARANTINED, RETIRED = "active", "quarantined", "retired"


class Sample(Base):
    """One labeled image. `key` is the id in the label file (Planet's image_name).

    Only active samples are in the data set. A quarantined sample's image is gone or unreadable (or its
    row is); a retired one is in no label file any more. Both come back when their row or file does."""

    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(500), unique=True)
    image_path: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    # Size and mtime let a re-pull skip decoding and hashing images that did not change.
    file_size: Mapped[int] = mapped_column(BigInteger)
    file_mtime_ns: Mapped[int] = mapped_column(BigInteger)
    # 64-bit pHash in hex, for near-duplicate groups; None until a pull decodes the image with them on.
    perceptual_hash: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20), default=ACTIVE, server_default=ACTIVE, index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(default=1, server_default="1")  # +1 when its image or labels change
    pinned_to_gate_set: Mapped[bool] = mapped_column(default=False)
    in_gate_set: Mapped[bool | None]  # sticky gate membership (gate.fraction); None: not decided yet
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    first_pull_id: Mapped[int] = mapped_column(ForeignKey("data_pulls.id"))
    updated_pull_id: Mapped[int] = mapped_column(ForeignKey("data_pulls.id"))
    labels: Mapped[list[Label]] = relationship(secondary="sample_labels", order_by="Label.name")


class SampleEvent(Base):
    """What happened to a sample, pull by pull: added, changed (image or labels), quarantined, retired,
    restored. The audit trail behind the current row."""

    __tablename__ = "sample_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    pull_id: Mapped[int] = mapped_column(ForeignKey("data_pulls.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")


class SampleLabel(Base):
    __tablename__ = "sample_labels"
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id"), primary_key=True, index=True)


class FoldSet(Base):
    """One assignment of samples to folds; a run trains on one fold set."""

    __tablename__ = "fold_sets"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    strategy: Mapped[str] = mapped_column(String(20))
    n_folds: Mapped[int]
    seed: Mapped[int]
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("fold_sets.id"))
    dataset_version: Mapped[str] = mapped_column(String(64))
    n_samples: Mapped[int]
    n_gate_set: Mapped[int]
    warnings: Mapped[list[Any]] = mapped_column(default=list)


class FoldAssignment(Base):
    __tablename__ = "fold_assignments"
    fold_set_id: Mapped[int] = mapped_column(ForeignKey("fold_sets.id", ondelete="CASCADE"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    fold: Mapped[int]


class FoldLabelCount(Base):
    __tablename__ = "fold_label_counts"
    fold_set_id: Mapped[int] = mapped_column(ForeignKey("fold_sets.id", ondelete="CASCADE"), primary_key=True)
    fold: Mapped[int] = mapped_column(primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id"), primary_key=True)
    count: Mapped[int]


class Run(Base):
    """One retraining run, whatever became of it (running, succeeded, skipped, failed, crashed)."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status_started", "status", "started_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]]
    seed: Mapped[int]
    dataset_version: Mapped[str | None] = mapped_column(String(64))
    dataset_size: Mapped[int | None]
    pull_id: Mapped[int | None] = mapped_column(ForeignKey("data_pulls.id"))
    fold_set_id: Mapped[int | None] = mapped_column(ForeignKey("fold_sets.id"))
    package_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    # With the PID, what tells its process from a later one given the same PID (tasks/liveness.py).
    process_start: Mapped[str | None] = mapped_column(String(100))
    heartbeat_at: Mapped[datetime | None]  # a running run's process proves it is alive (database clock)
    claimed_at: Mapped[datetime | None]  # when it got the training lock (after waiting, if it waited)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    # What an operator should know of how it went: folds reused after a crash, why it did not warm-start.
    notes: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    phase_seconds: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default="{}"
    )  # where the time went
    # The data home's bytes by kind when the run ended (a run that trained): storage use over time.
    storage_bytes: Mapped[dict[str, Any] | None]
    # The champion whose weights each fold started from: its training data is this model's too.
    warm_start_from: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    vocabulary: Mapped[list[Any] | None]
    beta: Mapped[float | None]
    global_threshold: Mapped[float | None]
    threshold_strategy: Mapped[str | None] = mapped_column(String(20))  # "per-class" or "global"
    threshold_reason: Mapped[str | None] = mapped_column(Text)  # the cross-fitted scores behind the choice


class TrainingLock(Base):
    """At most one row: who trains (or changes the data or the champion) now. Inserting it is the
    atomic claim (primary key); its holder beats `heartbeat_at` until it deletes the row."""

    __tablename__ = "training_lock"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    holder: Mapped[str] = mapped_column(String(100), server_default="")  # "run 12", "foldwise ingest"
    host: Mapped[str] = mapped_column(String(255), server_default="")
    pid: Mapped[int] = mapped_column(server_default="0")
    process_start: Mapped[str | None] = mapped_column(String(100))  # as Run.process_start
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.current_timestamp())


class ModelDecision(Base):
    """Who is champion, and why: every gate decision, manual promotion and rollback, in order."""

    __tablename__ = "model_decisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))  # "gate", "gate-failed", "promote" (by hand), "rollback"
    candidate_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    champion_before: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    champion_after: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    promoted: Mapped[bool]
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the numbers behind the decision


class Epoch(Base):
    """One epoch of one stage of one fold: the learning curve."""

    __tablename__ = "epochs"
    __table_args__ = (Index("ix_epochs_run_fold", "run_id", "fold"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    fold: Mapped[int]
    stage: Mapped[int]
    size: Mapped[int]
    epoch: Mapped[int]
    train_loss: Mapped[float | None]
    valid_loss: Mapped[float | None]
    accuracy_multi: Mapped[float | None]
    fbeta: Mapped[float | None]
    seconds: Mapped[float]


class FoldResult(Base):
    """A trained fold, recorded as soon as its files are in place. A later run with the same
    `fingerprint` (data, fold assignment, training settings) reuses it instead of training again."""

    __tablename__ = "fold_results"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    fold: Mapped[int] = mapped_column(primary_key=True)
    n_train: Mapped[int]
    n_valid: Mapped[int]
    seconds: Mapped[float]
    weights_path: Mapped[str] = mapped_column(Text)
    predictions_path: Mapped[str] = mapped_column(Text, server_default="")
    fingerprint: Mapped[str] = mapped_column(String(64), server_default="", index=True)
    reused_from_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    # When it trained (UTC): folds on a cluster train at the same time; unset for folds recorded before.
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Prediction(Base):
    """Probabilities of one sample, in the order of the run's vocabulary: out-of-fold, or on the gate set
    averaged over folds."""

    __tablename__ = "predictions"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    split: Mapped[str] = mapped_column(String(10))  # "oof" or "gate_set"
    fold: Mapped[int]
    probabilities: Mapped[list[Any]]


class ClassThreshold(Base):
    __tablename__ = "class_thresholds"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(String(200), primary_key=True)
    threshold: Mapped[float]  # in use: per-class or global, per the run's threshold_strategy
    per_class_threshold: Mapped[float | None]  # this class's per-class candidate
    fbeta: Mapped[float]
    positives: Mapped[int]
    fallback: Mapped[bool]
    curve: Mapped[list[Any]]  # F-beta at thresholds 0.00, 0.01, ..., 1.00


class ClassMetric(Base):
    __tablename__ = "class_metrics"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    split: Mapped[str] = mapped_column(String(10), primary_key=True)
    label: Mapped[str] = mapped_column(String(200), primary_key=True)
    support: Mapped[int]
    precision: Mapped[float]
    recall: Mapped[float]
    f1: Mapped[float]
    fbeta: Mapped[float]
    average_precision: Mapped[float | None]


class RunMetric(Base):
    """Overall metrics of a run's ensemble on one split ("oof", "gate_set"). `score` is the configured
    metric's honest figure: cross-fitted out of fold (thresholds never scored on the predictions they
    were fitted to), plain on the gate set; the baselines are what doing nothing scores there."""

    __tablename__ = "run_metrics"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    split: Mapped[str] = mapped_column(String(10), primary_key=True)
    metric: Mapped[str] = mapped_column(String(20), server_default="fbeta_samples")
    score: Mapped[float | None]
    score_in_sample: Mapped[float | None]  # out of fold: with thresholds fitted on the same predictions
    baseline_all: Mapped[float | None]  # every label predicted for every sample
    baseline_prior: Mapped[float | None]  # the most frequent labels predicted for every sample
    n_samples: Mapped[int]
    fbeta_samples: Mapped[float]
    fbeta_samples_global: Mapped[float]  # with the single best global threshold instead
    f1_macro: Mapped[float]
    mean_average_precision: Mapped[float | None]
    accuracy_multi: Mapped[float]


class PrequentialScore(Base):
    """How the champion did on a pull's new labeled samples, predicted before any model trained on them:
    the deployed model's field score. `classes`: per-class support, precision, recall, F1, F-beta;
    `label_shift`: each label's share of the new samples against its share of the rest of the data set."""

    __tablename__ = "prequential_scores"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    pull_id: Mapped[int] = mapped_column(ForeignKey("data_pulls.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))  # the run that scored the pull
    champion_run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(20))
    beta: Mapped[float]
    score: Mapped[float]
    n_samples: Mapped[int]
    classes: Mapped[list[Any]]
    label_shift: Mapped[dict[str, Any]]
