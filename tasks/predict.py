"""Predict with a trained ensemble (the champion or any run's): mean of the folds' sigmoid outputs,
optionally with test-time augmentation, then each class's threshold."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.data.core import DataLoaders

from foldwise.config import FoldwiseConfig
from foldwise.tasks.batches import CachedBatches
from foldwise.tasks.cache import CachedImage, decode_items, item_size
from foldwise.tasks.ensemble import EnsembleModel, load_weights
from foldwise.tasks.images import parallel_map
from foldwise.tasks.logs import get_logger
from foldwise.tasks.train import build_learner, choose_device, plain_model, predict

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"}


@dataclass(frozen=True)
class Predictions:
    ids: list[str]
    paths: list[Path]
    probabilities: np.ndarray  # (images, classes) in the model's vocabulary order
    failures: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images, skipped


def image_files(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expand to the images in them, sorted."""
    files = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


TTA_PASSES, TTA_BETA = 4, 0.25  # fastai's tta: 4 augmented passes, weighed 3:1 against the plain one


def model_item_size(model: EnsembleModel) -> int:
    """The size of the items this model's last trained stage saw."""
    return item_size(model.stages[-1], model.config.augment.presize)


def ensemble_probabilities(
    model: EnsembleModel,
    pixels: np.ndarray,
    rows: np.ndarray,
    tta: bool = False,
    device_setting: str = "auto",
) -> np.ndarray:
    """Mean of the folds' probabilities for the items at `rows` of `pixels` (items of the model's
    size), in the model's vocabulary order. The batches are prepared as in the model's validation:
    its size, crop and normalisation; with `tta`, fastai's test-time augmentation."""
    if len(rows) == 0:
        return np.zeros((0, len(model.vocab)), dtype=np.float32)
    device = choose_device(device_setting)
    size = model.image_size
    targets = np.zeros((len(rows), len(model.vocab)), dtype=np.float32)
    plain = CachedBatches(pixels, rows, targets, size, model.config, device, shuffle=False)
    augmented = CachedBatches(pixels, rows, targets, size, model.config, device, shuffle=False, augment=True)
    architecture_only = model.config.model_copy(deep=True)
    architecture_only.model.pretrained = False  # the weights come from the folds, not from a download
    learn = build_learner(
        DataLoaders(plain, plain, device=device), len(model.vocab), architecture_only, device
    )
    total = np.zeros((len(rows), len(model.vocab)), dtype=np.float64)
    for fold_path in model.fold_paths:
        plain_model(learn).load_state_dict(load_weights(fold_path))
        probabilities = predict(learn, plain, len(model.vocab))
        if tta:
            passes = [predict(learn, augmented, len(model.vocab)) for _ in range(TTA_PASSES)]
            probabilities = np.mean(passes, axis=0) * (1 - TTA_BETA) + probabilities * TTA_BETA
        total += probabilities
    return (total / len(model.fold_paths)).astype(np.float32)


def image_id(path: Path, config: FoldwiseConfig) -> str:
    """The id a label file would use: the file name without the configured suffix."""
    suffix = config.data.image_suffix
    return path.name[: -len(suffix)] if suffix and path.name.endswith(suffix) else path.name


def predict_images(
    config: FoldwiseConfig, inputs: list[Path], model: EnsembleModel, tta: bool = False
) -> Predictions:
    """Each image decoded once (in worker processes when there are many) into the model's item, then
    predicted in batches; unreadable images are reported and skipped."""
    log = get_logger(__name__)
    paths = image_files(inputs)
    size = model_item_size(model)
    decode = partial(decode_items, sizes=[size], max_pixels=config.data.max_image_pixels)
    images = [CachedImage(str(path), str(path), "") for path in paths]
    readable, failures, items = [], [], []
    for path, outcome in zip(paths, parallel_map(decode, images), strict=True):
        if isinstance(outcome, str):
            failures.append((path, outcome))
            log.warning("skipped %s", outcome)
        else:
            readable.append(path)
            items.append(outcome[size])
    log.info(
        "predicting %d images with run %d's %d folds%s",
        len(readable),
        model.run_id,
        len(model.fold_paths),
        " and TTA" if tta else "",
    )
    pixels = np.stack(items) if items else np.zeros((0, size, size, 3), dtype=np.uint8)
    probabilities = ensemble_probabilities(
        model, pixels, np.arange(len(items)), tta=tta, device_setting=config.train.device
    )
    return Predictions([image_id(p, config) for p in readable], readable, probabilities, failures)


def label_names_out(config: FoldwiseConfig) -> dict[str, str]:
    """Names back to the ids of the label file (HPA's numbers), so that output reads like input."""
    return {name: key for key, name in (config.data.label_names or {}).items()}


def write_predictions(
    config: FoldwiseConfig, model: EnsembleModel, predictions: Predictions, out: Path
) -> tuple[Path, Path]:
    """`out`: the seeds' submission format (id column, labels joined); beside it, probabilities."""
    out.parent.mkdir(parents=True, exist_ok=True)
    to_file = label_names_out(config)
    predicted = predictions.probabilities >= model.thresholds
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([config.data.id_column, config.data.label_column])
        for image, row in zip(predictions.ids, predicted, strict=True):
            labels = [
                to_file.get(name, name) for name, chosen in zip(model.vocab, row, strict=True) if chosen
            ]
            writer.writerow([image, config.data.label_delimiter.join(labels)])
    probabilities_path = out.with_name(f"{out.stem}_probabilities.csv")
    table = pd.DataFrame(predictions.probabilities, columns=model.vocab).round(6)
    table.insert(0, config.data.id_column, predictions.ids)
    table.to_csv(probabilities_path, index=False)
    return out, probabilities_path
