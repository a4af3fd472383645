"""A trained ensemble on disk: where its files live, how they are read, which one is champion.

Weights are only ever read as plain tensors (safetensors, or torch.load with weights_only=True):
a file that would need unpickling code is refused.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from db import registry
from db.session import session_scope
from foldwise.config import FoldwiseConfig
from foldwise.errors import FoldwiseError
from tasks.logs import get_logger


def run_folder(config: FoldwiseConfig, run_id: int, create: bool = False) -> Path:
    folder = config.data_home / "runs" / str(run_id)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


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
    config: FoldwiseConfig  # the config it was trained with: arch, image size, preprocessing

    @property
    def image_size(self) -> int:
        return self.config.train.stages[-1].size


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
        raise ModelError(f"run {run_id} has no model ({record_path} not found)") from None
    trained_with = FoldwiseConfig.model_validate(record["config"])
    return EnsembleModel(
        run_id=run_id,
        vocab=record["vocab"],
        thresholds=np.array(record["thresholds"], dtype=np.float64),
        fold_paths=[record_path.parent / name for name in record["folds"]],
        config=trained_with,
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


def warm_start_source(config: FoldwiseConfig) -> int | None:
    """The champion a warm start begins from, when `train.warm_start` is on and its arch matches."""
    if not config.train.warm_start:
        return None
    log = get_logger(__name__)
    with session_scope(config.resolved_database_url()) as session:
        champion = registry.current_champion(session=session)
    if champion is None:
        log.info("warm start asked for, but there is no champion yet: training from scratch")
        return None
    arch = load_model(config, champion).config.model.arch
    if arch != config.model.arch:
        log.warning(
            "champion run %d is a %s, this run trains a %s: training from scratch",
            champion,
            arch,
            config.model.arch,
        )
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
