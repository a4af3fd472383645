"""Predict with a trained ensemble (the champion or any run's): mean of the folds' sigmoid outputs,
optionally with test-time augmentation, then each class's threshold."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foldwise.config import FoldwiseConfig
from tasks.images import UnreadableImage, read_image
from tasks.logs import get_logger
from tasks.models import EnsembleModel, load_weights
from tasks.train import build_learner, choose_device, make_dataloaders

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


def ensemble_probabilities(
    model: EnsembleModel, paths: list[Path], tta: bool = False, device_setting: str = "auto"
) -> np.ndarray:
    """Mean of the folds' probabilities for readable images, in the model's vocabulary order."""
    if not paths:
        return np.zeros((0, len(model.vocab)), dtype=np.float32)
    device = choose_device(device_setting)
    frame = pd.DataFrame({"image_path": [str(p) for p in paths], "labels": [[] for _ in paths]})
    dls = make_dataloaders(frame, [0], model.vocab, model.image_size, model.config, device)
    architecture_only = model.config.model_copy(deep=True)
    architecture_only.model.pretrained = False  # the weights come from the folds, not from a download
    learn = build_learner(dls, architecture_only, device)
    total = np.zeros((len(paths), len(model.vocab)), dtype=np.float64)
    for fold_path in model.fold_paths:
        learn.model.load_state_dict(load_weights(fold_path))
        test = learn.dls.test_dl(frame)
        probabilities, _ = learn.tta(dl=test) if tta else learn.get_preds(dl=test)
        total += probabilities.float().numpy()
    return (total / len(model.fold_paths)).astype(np.float32)


def image_id(path: Path, config: FoldwiseConfig) -> str:
    """The id a label file would use: the file name without the configured suffix."""
    suffix = config.data.image_suffix
    return path.name[: -len(suffix)] if suffix and path.name.endswith(suffix) else path.name


def predict_images(
    config: FoldwiseConfig, inputs: list[Path], model: EnsembleModel, tta: bool = False
) -> Predictions:
    log = get_logger(__name__)
    readable, failures = [], []
    for path in image_files(inputs):
        try:
            read_image(path, config.data.max_image_pixels)
        except UnreadableImage as error:
            failures.append((path, str(error)))
            log.warning("skipped %s", error)
        else:
            readable.append(path)
    log.info(
        "predicting %d images with run %d's %d folds%s",
        len(readable),
        model.run_id,
        len(model.fold_paths),
        " and TTA" if tta else "",
    )
    probabilities = ensemble_probabilities(model, readable, tta=tta, device_setting=config.train.device)
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
