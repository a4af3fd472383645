"""Fold bookkeeping: the samples a fold sees (with their cached items), its fingerprint, the reuse of a
fold an earlier unfinished run trained on the same inputs, and its records (files, then rows)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from foldwise.config import FoldwiseConfig, StageConfig
from foldwise.db import folds as fold_store
from foldwise.db import samples as sample_store
from foldwise.db import training as training_store
from foldwise.db.session import session_scope, write_with_retries
from foldwise.files import atomic_file
from foldwise.tasks.batches import multi_hot
from foldwise.tasks.cache import CachedImage, ImageCache, ensure_cached, item_size, item_sizes
from foldwise.tasks.ensemble import run_folder
from foldwise.tasks.logs import get_logger


@dataclass(frozen=True)
class FoldOutput:
    """What a trained fold leaves behind: paths and numbers, never a Learner."""

    fold: int
    weights_path: Path
    predictions_path: Path  # npz: sample ids and probabilities, out of fold and on the gate set
    n_train: int
    n_valid: int
    seconds: float
    started_at: datetime | None  # when it trained (UTC); a reused fold's are those of its training
    finished_at: datetime | None
    reused_from: int | None = None  # the unfinished run that trained it, when reused


@dataclass
class FoldImages:
    """The samples a fold sees (its training, validation and gate set rows), with where their items
    are in the image cache."""

    frame: pd.DataFrame  # sample_id, content_hash, labels, fold
    vocab: list[str]
    targets: np.ndarray

    def at(self, size: int, config: FoldwiseConfig) -> tuple[np.ndarray, np.ndarray]:
        """The cache's items for this stage size, and the row of each sample in them."""
        store = ImageCache(config).store(item_size(StageConfig(size=size, epochs=1), config.augment.presize))
        return store.pixels(), np.array(
            [store.rows[key] for key in self.frame["content_hash"]], dtype=np.int64
        )

    def subset(self, mask: np.ndarray) -> FoldImages:
        return FoldImages(self.frame[mask].reset_index(drop=True), self.vocab, self.targets[mask])


def load_fold_images(config: FoldwiseConfig, fold_set: fold_store.StoredFoldSet) -> FoldImages:
    """The fold set's samples, every one in the image cache at every stage's size. A sample whose
    image cannot be cached any more (its file went since the pull) is left out, said in the log."""
    with session_scope(config.resolved_database_url()) as session:
        samples = [s for s in sample_store.stored_samples(session=session).values() if s.id in fold_set.folds]
    failures = ensure_cached(
        config, [CachedImage(s.image_path, s.key, s.content_hash) for s in samples], item_sizes(config)
    )
    for sample in samples:
        if sample.content_hash in failures:
            get_logger(__name__).warning("sample %s left out: %s", sample.key, failures[sample.content_hash])
    rows = [
        {
            "sample_id": s.id,
            "content_hash": s.content_hash,
            "labels": sorted(s.labels),
            "fold": fold_set.folds[s.id],
        }
        for s in samples
        if s.content_hash not in failures
    ]
    frame = pd.DataFrame(rows).sort_values("sample_id", ignore_index=True)
    vocab = sorted({label for labels in frame["labels"] for label in labels})
    return FoldImages(frame, vocab, multi_hot(list(frame["labels"]), vocab))


def fold_fingerprint(
    config: FoldwiseConfig, fold_set: fold_store.StoredFoldSet, fold: int, warm_from: int | None
) -> str:
    """Same data, same fold assignment, same training settings and starting weights: same fold."""
    training = config.model_dump(mode="json", include={"model", "train", "augment"})
    for where_or_how_long in ("device", "num_workers", "fold_timeout_minutes"):
        training["train"].pop(where_or_how_long)
    payload = {
        "dataset_version": fold_set.dataset_version,
        "folds": sorted(fold_set.folds.items()),
        "fold": fold,
        "seed": config.folds.seed,
        "training": training,
        "warm_from": warm_from,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def link_or_copy(source: Path, target: Path) -> None:
    with atomic_file(target) as partial:
        try:
            os.link(source, partial)
        except OSError:  # another file system, or no hard links there
            shutil.copy2(source, partial)


def reuse_fold(config: FoldwiseConfig, run_id: int, fold: int, fingerprint: str) -> FoldOutput | None:
    """A fold that an earlier, unfinished run trained on the same inputs: its files become this run's."""
    url = config.resolved_database_url()
    with session_scope(url) as session:
        found = next(
            (
                row
                for row in training_store.reusable_folds(
                    session=session, fingerprint=fingerprint, before_run=run_id
                )
                if Path(row.weights_path).is_file() and Path(row.predictions_path).is_file()
            ),
            None,
        )
    if found is None:
        return None
    folder = run_folder(config, run_id, create=True)
    output = FoldOutput(
        fold,
        folder / f"fold{fold}.safetensors",
        folder / f"fold{fold}_predictions.npz",
        found.n_train,
        found.n_valid,
        found.seconds,
        found.started_at,
        found.finished_at,
        reused_from=found.run_id,
    )
    link_or_copy(Path(found.weights_path), output.weights_path)
    link_or_copy(Path(found.predictions_path), output.predictions_path)
    note = f"fold {fold} reused from run {found.run_id} (same data, folds and training settings)"

    def record(session: Session) -> None:
        record_fold(session, run_id, output, fingerprint, [])
        training_store.copy_epochs(session=session, from_run=found.run_id, to_run=run_id, fold=fold)
        training_store.add_note(session=session, run_id=run_id, note=note)

    write_with_retries(url, record)
    get_logger(__name__).info("%s: not trained again", note)
    return output


def record_fold(
    session: Session, run_id: int, output: FoldOutput, fingerprint: str, epochs: list[dict[str, Any]]
) -> None:
    training_store.add_fold_result(
        session=session,
        run_id=run_id,
        fold=output.fold,
        n_train=output.n_train,
        n_valid=output.n_valid,
        seconds=output.seconds,
        weights_path=str(output.weights_path),
        predictions_path=str(output.predictions_path),
        fingerprint=fingerprint,
        reused_from_run_id=output.reused_from,
        started_at=output.started_at,
        finished_at=output.finished_at,
    )
    for epoch in epochs:
        training_store.add_epoch(session=session, run_id=run_id, fold=output.fold, **epoch)
