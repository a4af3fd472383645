"""Data access for runs and what training leaves: epochs, fold results, predictions, thresholds, metrics."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, delete, insert, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from foldwise.db.models import (
    ClassMetric,
    ClassThreshold,
    Epoch,
    FoldResult,
    Prediction,
    Run,
    RunMetric,
    TrainingLock,
    utcnow,
)

RUNNING, SUCCEEDED, SKIPPED, FAILED, CRASHED = "running", "succeeded", "skipped", "failed", "crashed"
ENDED_UNFINISHED = (FAILED, CRASHED)  # their recorded folds may be reused by a later run
LOCK_NAME = "training"
# Folds training at once (on a Ray cluster) add to their run's notes and phase times: read and write
# the run row under a row lock (PostgreSQL; SQLite's writers queue anyway). NO KEY UPDATE, so that it
# does not wait on, or deadlock with, the key-share locks that inserting fold rows takes on the run.
CONCURRENT_FOLDS = {"key_share": True}
EPOCH_FIELDS = {
    "train_loss": "train_loss",
    "valid_loss": "valid_loss",
    "accuracy_multi": "accuracy_multi",
    "fbeta_score": "fbeta",
}


class DatabaseNow(FunctionElement):
    """The database server's clock as naive UTC, like every stored time: heartbeats are dated and aged
    by it, so that hosts whose clocks disagree agree on how old a heartbeat is."""

    type = DateTime()
    inherit_cache = True


@compiles(DatabaseNow, "postgresql")
def _postgresql_now(element: DatabaseNow, compiler: Any, **kw: Any) -> str:
    return "(statement_timestamp() AT TIME ZONE 'UTC')"  # whatever the session's TimeZone


@compiles(DatabaseNow, "sqlite")
def _sqlite_now(element: DatabaseNow, compiler: Any, **kw: Any) -> str:
    # UTC, in the text form SQLAlchemy stores (microseconds), so that a heartbeat read back and
    # compared with its row (take_over_training_lock) matches it.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def database_now(*, session: Session) -> datetime:
    return session.scalar(select(DatabaseNow()))


def create_run(
    *,
    session: Session,
    config: dict[str, Any],
    seed: int,
    package_versions: dict[str, str],
    git_commit: str | None,
    host: str,
    pid: int,
    flow_run_id: str | None,
    process_start: str | None = None,
) -> int:
    now = utcnow()
    run = Run(
        status=RUNNING,
        pid=pid,
        process_start=process_start,
        heartbeat_at=DatabaseNow(),
        config=config,
        seed=seed,
        package_versions=package_versions,
        git_commit=git_commit,
        host=host,
        flow_run_id=flow_run_id,
        started_at=now,
    )
    session.add(run)
    session.flush()
    return run.id


def finish_run(
    *, session: Session, run_id: int, status: str, reason: str | None = None, **values: Any
) -> None:
    """Record how the run ended (the training lock is released separately, at its very end)."""
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(status=status, reason=reason, finished_at=utcnow(), **values)
    )


def fail_running_run(*, session: Session, run_id: int, status: str, reason: str) -> None:
    """Mark the run failed or crashed, unless it got further: a run whose results are recorded stays
    succeeded whatever happens after (its gate, say)."""
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RUNNING)
        .values(status=status, reason=reason, finished_at=utcnow())
    )


def add_note(*, session: Session, run_id: int, note: str) -> None:
    run = session.get_one(Run, run_id, with_for_update=CONCURRENT_FOLDS)
    run.notes = [*run.notes, note]


def add_phase_seconds(*, session: Session, run_id: int, phase: str, seconds: float) -> None:
    run = session.get_one(Run, run_id, with_for_update=CONCURRENT_FOLDS)
    run.phase_seconds = run.phase_seconds | {phase: round(run.phase_seconds.get(phase, 0.0) + seconds, 3)}


def set_storage_bytes(*, session: Session, run_id: int, use: dict[str, int]) -> None:
    session.get_one(Run, run_id).storage_bytes = use


def running_runs(*, session: Session) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.status == RUNNING).order_by(Run.id)))


def beat(*, session: Session, run_id: int | None, holder: str | None) -> None:
    """A beat, by the database's clock, of a run (whatever its status) and of the lock `holder` holds."""
    if run_id is not None:
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=DatabaseNow()))
    if holder is not None:
        session.execute(
            update(TrainingLock).where(TrainingLock.holder == holder).values(heartbeat_at=DatabaseNow())
        )


def insert_training_lock(
    *, session: Session, run_id: int | None, holder: str, host: str, pid: int, process_start: str | None
) -> None:
    """The claim: this insert of the lock's single row raises IntegrityError for all but one holder."""
    session.execute(
        insert(TrainingLock).values(
            name=LOCK_NAME,
            run_id=run_id,
            holder=holder,
            host=host,
            pid=pid,
            process_start=process_start,
            acquired_at=DatabaseNow(),
            heartbeat_at=DatabaseNow(),
        )
    )
    if run_id is not None:
        session.execute(update(Run).where(Run.id == run_id).values(claimed_at=utcnow()))


def training_lock(*, session: Session) -> TrainingLock | None:
    return session.get(TrainingLock, LOCK_NAME)


def release_training_lock(*, session: Session, holder: str) -> None:
    session.execute(delete(TrainingLock).where(TrainingLock.holder == holder))


def take_over_training_lock(*, session: Session, holder: str, heartbeat_at: datetime) -> bool:
    """Delete a dead holder's lock, only if it is still the one that was judged dead."""
    deleted = session.execute(
        delete(TrainingLock).where(TrainingLock.holder == holder, TrainingLock.heartbeat_at == heartbeat_at)
    )
    return deleted.rowcount == 1


def last_succeeded_run(*, session: Session) -> Run | None:
    return session.scalar(select(Run).where(Run.status == SUCCEEDED).order_by(Run.id.desc()).limit(1))


def add_epoch(
    *,
    session: Session,
    run_id: int,
    fold: int,
    stage: int,
    size: int,
    epoch: int,
    values: dict[str, float],
    seconds: float,
) -> None:
    columns = {column: float(values[name]) for name, column in EPOCH_FIELDS.items() if name in values}
    session.add(
        Epoch(run_id=run_id, fold=fold, stage=stage, size=size, epoch=epoch, seconds=seconds, **columns)
    )


def add_fold_result(*, session: Session, run_id: int, **values: Any) -> None:
    session.execute(insert(FoldResult).values(run_id=run_id, **values))


def fold_results(*, session: Session, run_id: int) -> list[FoldResult]:
    return list(
        session.scalars(select(FoldResult).where(FoldResult.run_id == run_id).order_by(FoldResult.fold))
    )


def reusable_folds(*, session: Session, fingerprint: str, before_run: int) -> list[FoldResult]:
    """Folds with this fingerprint that earlier runs recorded but never used in a model (they failed
    or crashed afterwards), newest first."""
    return list(
        session.scalars(
            select(FoldResult)
            .join(Run, Run.id == FoldResult.run_id)
            .where(
                FoldResult.fingerprint == fingerprint,
                Run.id < before_run,
                Run.status.in_(ENDED_UNFINISHED),
            )
            .order_by(Run.id.desc())
        )
    )


def copy_epochs(*, session: Session, from_run: int, to_run: int, fold: int) -> None:
    columns = [c for c in Epoch.__table__.columns if c.name not in ("id", "run_id")]
    rows = session.execute(
        select(*columns).where(Epoch.run_id == from_run, Epoch.fold == fold).order_by(Epoch.id)
    ).all()
    if rows:
        session.execute(insert(Epoch), [dict(row._mapping) | {"run_id": to_run} for row in rows])


def unfinished_fold_results_before(*, session: Session, run_id: int) -> list[FoldResult]:
    """Folds of failed or crashed runs older than this one: no later run can reuse them once this
    one succeeded on newer data."""
    return list(
        session.scalars(
            select(FoldResult)
            .join(Run, Run.id == FoldResult.run_id)
            .where(Run.id < run_id, Run.status.in_(ENDED_UNFINISHED))
        )
    )


def delete_fold_results(*, session: Session, rows: list[FoldResult]) -> None:
    for row in rows:
        session.execute(
            delete(FoldResult).where(FoldResult.run_id == row.run_id, FoldResult.fold == row.fold)
        )


def recorded_files(*, session: Session) -> set[str]:
    """Every path the DB refers to under the data home: fold weights and predictions."""
    paths = set()
    for weights, predictions in session.execute(select(FoldResult.weights_path, FoldResult.predictions_path)):
        paths.update(path for path in (weights, predictions) if path)
    return paths


def add_predictions(*, session: Session, run_id: int, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(Prediction), [r | {"run_id": run_id} for r in rows])


def add_thresholds(*, session: Session, run_id: int, thresholds: list[Any]) -> None:
    rows = [asdict(t) for t in thresholds]
    for row in rows:
        row["per_class_threshold"] = row.pop("per_class")
    session.execute(insert(ClassThreshold), [row | {"run_id": run_id} for row in rows])


def add_metrics(
    *,
    session: Session,
    run_id: int,
    split: str,
    overall: Any,
    classes: list[Any],
    fbeta_samples_global: float,
    scores: dict[str, Any],
) -> None:
    session.add(
        RunMetric(
            run_id=run_id, split=split, fbeta_samples_global=fbeta_samples_global, **asdict(overall), **scores
        )
    )
    session.execute(insert(ClassMetric), [asdict(c) | {"run_id": run_id, "split": split} for c in classes])
