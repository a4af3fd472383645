"""Data access for runs and what training leaves: epochs, fold results, predictions, thresholds, metrics."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
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
EPOCH_FIELDS = {
    "train_loss": "train_loss",
    "valid_loss": "valid_loss",
    "accuracy_multi": "accuracy_multi",
    "fbeta_score": "fbeta",
}


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
) -> int:
    now = utcnow()
    run = Run(
        status=RUNNING,
        pid=pid,
        heartbeat_at=now,
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
    *,
    session: Session,
    run_id: int,
    status: str,
    reason: str | None = None,
    release_lock: bool = True,
    **values: Any,
) -> None:
    """Record how the run ended and, unless told otherwise, release the training lock if it held it,
    in the same transaction."""
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(status=status, reason=reason, finished_at=utcnow(), **values)
    )
    if release_lock:
        release_training_lock(session=session, run_id=run_id)


def release_training_lock(*, session: Session, run_id: int) -> None:
    session.execute(delete(TrainingLock).where(TrainingLock.run_id == run_id))


def running_runs(*, session: Session) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.status == RUNNING).order_by(Run.id)))


def beat(*, session: Session, run_id: int) -> None:
    session.execute(update(Run).where(Run.id == run_id, Run.status == RUNNING).values(heartbeat_at=utcnow()))


def try_claim_training(*, session: Session, run_id: int) -> bool:
    """Take the training lock for the run: the insert of its single row succeeds for one run only."""
    try:
        with session.begin_nested():
            session.add(TrainingLock(name="training", run_id=run_id))
    except IntegrityError:
        return False
    session.execute(update(Run).where(Run.id == run_id).values(claimed_at=utcnow()))
    return True


def training_lock_holder(*, session: Session) -> Run | None:
    lock = session.get(TrainingLock, "training")
    return session.get(Run, lock.run_id) if lock else None


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


def add_fold_results(*, session: Session, run_id: int, results: list[dict[str, Any]]) -> None:
    session.execute(insert(FoldResult), [r | {"run_id": run_id} for r in results])


def add_predictions(*, session: Session, run_id: int, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(Prediction), [r | {"run_id": run_id} for r in rows])


def add_thresholds(*, session: Session, run_id: int, thresholds: list[Any]) -> None:
    session.execute(insert(ClassThreshold), [asdict(t) | {"run_id": run_id} for t in thresholds])


def add_metrics(
    *,
    session: Session,
    run_id: int,
    split: str,
    overall: Any,
    classes: list[Any],
    fbeta_samples_global: float,
) -> None:
    session.add(
        RunMetric(run_id=run_id, split=split, fbeta_samples_global=fbeta_samples_global, **asdict(overall))
    )
    session.execute(insert(ClassMetric), [asdict(c) | {"run_id": run_id, "split": split} for c in classes])
