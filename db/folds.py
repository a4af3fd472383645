"""Data access for fold sets: which sample is in which fold, and label counts per fold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from foldwise.db.models import FoldAssignment, FoldLabelCount, FoldSet
from foldwise.db.samples import label_ids

GATE_SET = -1  # fold number of gate set samples: predicted by every fold, trained on by none


@dataclass(frozen=True)
class StoredFoldSet:
    id: int
    n_folds: int
    seed: int
    dataset_version: str
    folds: dict[int, int]  # sample id -> fold (GATE_SET: in the gate set)


def load_fold_set(*, session: Session, fold_set_id: int) -> StoredFoldSet:
    fold_set = session.get_one(FoldSet, fold_set_id)
    folds = dict(
        session.execute(
            select(FoldAssignment.sample_id, FoldAssignment.fold).where(
                FoldAssignment.fold_set_id == fold_set_id
            )
        ).all()
    )
    return StoredFoldSet(fold_set.id, fold_set.n_folds, fold_set.seed, fold_set.dataset_version, folds)


def latest_fold_set(*, session: Session) -> StoredFoldSet | None:
    latest = session.scalar(select(FoldSet.id).order_by(FoldSet.id.desc()).limit(1))
    return None if latest is None else load_fold_set(session=session, fold_set_id=latest)


def save_fold_set(
    *,
    session: Session,
    strategy: str,
    n_folds: int,
    seed: int,
    parent_id: int | None,
    dataset_version: str,
    assignment: dict[int, int],
    label_names: list[str],
    counts: np.ndarray,
    warnings: list[str],
) -> int:
    fold_set = FoldSet(
        strategy=strategy,
        n_folds=n_folds,
        seed=seed,
        parent_id=parent_id,
        dataset_version=dataset_version,
        n_samples=sum(1 for fold in assignment.values() if fold >= 0),
        n_gate_set=sum(1 for fold in assignment.values() if fold < 0),
        warnings=warnings,
    )
    session.add(fold_set)
    session.flush()
    if assignment:
        session.execute(
            insert(FoldAssignment),
            [{"fold_set_id": fold_set.id, "sample_id": s, "fold": f} for s, f in assignment.items()],
        )
    ids = label_ids(session=session, names=set(label_names))
    rows = [
        {"fold_set_id": fold_set.id, "fold": fold, "label_id": ids[name], "count": int(counts[fold, column])}
        for fold in range(n_folds)
        for column, name in enumerate(label_names)
    ]
    if rows:
        session.execute(insert(FoldLabelCount), rows)
    return fold_set.id
