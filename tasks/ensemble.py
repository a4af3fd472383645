"""A trained ensemble on disk: where its files live, how they are read, which one is champion.

Weights are only ever read as plain tensors (safetensors, or torch.load with weights_only=True):
a file that would need unpickling code is refused. Files are written whole (`foldwise.files.atomic_file`:
a temporary name, then a rename) before the DB rows that refer to them; a file no row refers to is a crash's leftover and
is removed by the next run.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from foldwise.config import FoldwiseConfig, StageConfig
from foldwise.db import queries, registry
from foldwise.db import training as training_store
from foldwise.db.folds import GATE_SET, load_fold_set
from foldwise.db.models import Run
from foldwise.db.session import session_scope
from foldwise.errors import FoldwiseError
from foldwise.files import atomic_file, reported_disk_errors
from foldwise.stages import trained_stages
from foldwise.tasks.logs import get_logger

MODEL_RECORD = "model.json"


def runs_folder(config: FoldwiseConfig) -> Path:
    return config.data_home / "runs"


def run_folder(config: FoldwiseConfig, run_id: int, create: bool = False) -> Path:
    folder = runs_folder(config) / str(run_id)
    if create:
        with reported_disk_errors(folder, f"cannot create {folder}"):
            folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_model_record(config: FoldwiseConfig, run_id: int) -> Path:
    """model.json beside the weights, from the run's committed rows: enough to predict without the DB
    (and without unpickling)."""
    with session_scope(config.resolved_database_url()) as session:
        run = session.get_one(Run, run_id)
        thresholds = {
            row["label"]: row["threshold"] for row in queries.class_results(session=session, run_id=run_id)
        }
        folds = training_store.fold_results(session=session, run_id=run_id)
        train = run.config["train"]
        record = {
            "run_id": run_id,
            "arch": run.config["model"]["arch"],
            "image_size": trained_stages(
                train["stages"], train.get("warm_start_stages"), run.warm_start_from is not None
            )[-1]["size"],
            "warm_start_from": run.warm_start_from,
            "vocab": run.vocabulary,
            "thresholds": [thresholds[label] for label in run.vocabulary],
            "global_threshold": run.global_threshold,
            "folds": [Path(fold.weights_path).name for fold in folds],
            "config": run.config,
        }
    path = run_folder(config, run_id, create=True) / MODEL_RECORD
    with atomic_file(path) as partial:
        partial.write_text(json.dumps(record, indent=2))
    return path


def file_key(path: Path | str) -> tuple[str, str]:
    """(run folder, file name): how a recorded path is matched on disk, wherever the data home moved."""
    path = Path(path)
    return path.parent.name, path.name


def remove_unrecorded_files(config: FoldwiseConfig) -> list[Path]:
    """Delete what crashed runs left under `data_home/runs` that no DB row refers to: half-written
    files, and weights written before their row. Run under the training lock: nobody writes there."""
    folder = runs_folder(config)
    if not folder.is_dir():
        return []
    with session_scope(config.resolved_database_url()) as session:
        recorded = {file_key(path) for path in training_store.recorded_files(session=session)}
        statuses = dict(session.execute(select(Run.id, Run.status)).tuples().all())
    removed = []
    for run_dir in sorted(path for path in folder.iterdir() if path.is_dir() and path.name.isdigit()):
        status = statuses.get(int(run_dir.name))
        if status is None or status == training_store.RUNNING:  # not ours to judge
            continue
        for path in sorted(run_dir.iterdir()):
            keep = file_key(path) in recorded or (
                path.name == MODEL_RECORD and status == training_store.SUCCEEDED
            )
            if not keep and path.is_file():
                path.unlink()
                removed.append(path)
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
    if removed:
        get_logger(__name__).info(
            "removed %d file(s) that crashed runs left without a record: %s",
            len(removed),
            ", ".join(str(path.relative_to(folder)) for path in removed[:10]),
        )
    return removed


def forget_unfinished_folds(config: FoldwiseConfig, before_run: int) -> int:
    """Once a run succeeded, folds that earlier failed or crashed runs left for reuse are deleted:
    rows first, then files (a crash in between leaves files the next run removes)."""
    with session_scope(config.resolved_database_url()) as session:
        rows = training_store.unfinished_fold_results_before(session=session, run_id=before_run)
        paths = [Path(path) for row in rows for path in (row.weights_path, row.predictions_path) if path]
        training_store.delete_fold_results(session=session, rows=rows)
    for path in paths:
        path.unlink(missing_ok=True)
    return len(rows)


class ModelError(FoldwiseError, ValueError):
    """No such model, or its files cannot be used; the message says which and why."""


class UnsafeWeights(ModelError):
    """A weights file that is not plain tensors (e.g. a pickle that would run code)."""


@dataclass(frozen=True)
class EnsembleModel:
    run_id: int
    vocab: list[str]
    thresholds: np.ndarray
    fold_paths: list[Path]
    config: FoldwiseConfig  # the config it was trained with: arch, stages, preprocessing
    warm_start_from: int | None = None  # the champion its folds started from: it trained the warm stages

    @property
    def stages(self) -> list[StageConfig]:
        train = self.config.train
        return trained_stages(train.stages, train.warm_start_stages, self.warm_start_from is not None)

    @property
    def image_size(self) -> int:
        """The size its last stage trained at: what it predicts at."""
        return self.stages[-1].size


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write plain tensors as safetensors. Its I/O errors come as a SafetensorError that gives the OS
    error only in its text ('... No space left on device (os error 28)'): raised as that OSError."""
    try:
        save_file(state, str(path))
    except SafetensorError as error:
        code = re.search(r"\(os error (\d+)\)", str(error))
        if code is None:
            raise
        number = int(code[1])
        raise OSError(number, os.strerror(number), str(path)) from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Plain tensors only: safetensors, or torch.load(weights_only=True) for .pt/.pth files."""
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"weights file {path} not found") from None
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise UnsafeWeights(
            f"refused {path}: not a file of plain tensors ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "Foldwise loads weights only from safetensors or weights-only torch files"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafeWeights(f"refused {path}: expected a mapping of names to tensors")
    return state


def load_model(config: FoldwiseConfig, run_id: int) -> EnsembleModel:
    record_path = run_folder(config, run_id) / "model.json"
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"run {run_id} has no model ({record_path} not found; retention may have removed its files: "
            "see the run's notes)"
        ) from None
    # Records from before `model.head` existed: those models have fastai's head, whatever `auto` says now.
    record["config"].setdefault("model", {}).setdefault("head", "fastai")
    trained_with = FoldwiseConfig.model_validate(record["config"])
    return EnsembleModel(
        run_id=run_id,
        vocab=record["vocab"],
        thresholds=np.array(record["thresholds"], dtype=np.float64),
        fold_paths=[record_path.parent / name for name in record["folds"]],
        config=trained_with,
        warm_start_from=record.get("warm_start_from"),  # absent in records from before it was kept
    )


def resolve_model(config: FoldwiseConfig, model: str) -> EnsembleModel:
    """'champion' or a run id."""
    if model == "champion":
        with session_scope(config.resolved_database_url()) as session:
            run_id = registry.current_champion(session=session)
        if run_id is None:
            raise ModelError("no champion yet: a successful `foldwise run` makes the first one")
        return load_model(config, run_id)
    if not model.isdigit():
        raise ModelError(f"--model must be 'champion' or a run id, not {model!r}")
    return load_model(config, int(model))


def warm_start_leaks(current: dict[int, int], ancestors: list[dict[int, int]]) -> dict[int, int]:
    """For each current fold, how many of its validation samples a model in the champion's lineage
    trained on for that same fold (any other fold than theirs, the gate set aside)."""
    leaks: dict[int, int] = {}
    for sample_id, fold in current.items():
        if fold == GATE_SET:
            continue
        for folds in ancestors:
            before = folds.get(sample_id, GATE_SET)
            if before not in (GATE_SET, fold):
                leaks[fold] = leaks.get(fold, 0) + 1
                break
    return leaks


def cold_start_reason(config: FoldwiseConfig, champion: int, fold_set_id: int) -> str | None:
    """Why fold k of this run may not start from fold k of the champion, or None if it may."""
    trained = load_model(config, champion).config.model
    if trained.arch != config.model.arch:
        return f"champion run {champion} is a {trained.arch}, this run trains a {config.model.arch}"
    if trained.resolved_head() != config.model.resolved_head():
        return (
            f"champion run {champion} has a {trained.resolved_head()} head, "
            f"this run trains a {config.model.resolved_head()} one"
        )
    with session_scope(config.resolved_database_url()) as session:
        ancestors = registry.lineage(session=session, run_id=champion)
        ancestor_folds = registry.training_folds(session=session, run_ids=ancestors)
        current = load_fold_set(session=session, fold_set_id=fold_set_id)
        n_folds = session.get_one(Run, champion).config["folds"]["n_folds"]
    if n_folds != current.n_folds:
        return f"champion run {champion} has {n_folds} folds, this run {current.n_folds}"
    leaks = warm_start_leaks(current.folds, ancestor_folds)
    if leaks:
        detail = ", ".join(f"fold {fold}: {count}" for fold, count in sorted(leaks.items()))
        return (
            f"the folds changed since champion run {champion}: validation samples it (or a model it "
            f"started from) trained on ({detail})"
        )
    return None


def warm_start_source(config: FoldwiseConfig, run_id: int, fold_set_id: int) -> int | None:
    """The champion a warm start begins from: only when `train.warm_start` is on, the arch matches and
    no current validation sample was in the training data of the champion's same fold (or of a model
    it descends from). Otherwise a cold start, with the reason in the log and the run's notes."""
    if not config.train.warm_start:
        return None
    log = get_logger(__name__)
    url = config.resolved_database_url()
    with session_scope(url) as session:
        champion = registry.current_champion(session=session)
    if champion is None:
        log.info("warm start asked for, but there is no champion yet: training from scratch")
        return None
    reason = cold_start_reason(config, champion, fold_set_id)
    with session_scope(url) as session:
        if reason is None:
            session.get_one(Run, run_id).warm_start_from = champion
        else:
            training_store.add_note(session=session, run_id=run_id, note=f"trained from scratch: {reason}")
    if reason is not None:
        log.warning("no warm start: %s; training from scratch", reason)
        return None
    log.info("warm start from champion run %d", champion)
    return champion


def warm_state(
    target: dict[str, torch.Tensor],
    source: dict[str, torch.Tensor],
    source_vocab: list[str],
    target_vocab: list[str],
) -> dict[str, torch.Tensor]:
    """The source's weights in the target's shapes. The output layer (last in the state dict) keeps
    the rows of the labels both know; new labels keep their fresh rows, dropped labels are left out."""
    output_layer = next(reversed(target)).rsplit(".", 1)[0] + "."
    merged = {}
    for key, fresh in target.items():
        old = source.get(key)
        if key.startswith(output_layer) and old is not None:
            rows = fresh.clone()
            for row, label in enumerate(target_vocab):
                if label in source_vocab:
                    rows[row] = old[source_vocab.index(label)]
            merged[key] = rows
        elif old is not None and old.shape == fresh.shape:
            merged[key] = old
        else:
            merged[key] = fresh
    return merged
