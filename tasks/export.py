"""Export an ensemble for serving: one ONNX model (the folds averaged inside the graph) and a JSON file
with its labels, thresholds and the preprocessing its input needs.

The graph does what `ensemble_probabilities` does after the image cache: the item (uint8, RGB) is
turned into floats, resized whole to the model's stage size (bilinear, corners aligned: fastai's
validation transform), normalised as the model was trained (ImageNet's statistics when pretrained,
else none), and each fold's sigmoid outputs are averaged. What comes before the cache is the
client's: the centred square of the image, resized (PIL bilinear) to the item size, stage size x
`augment.presize`. Weights are read only through `load_weights` (safetensors). The written graph is
checked against PyTorch with onnxruntime before the command succeeds.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from fastai.data.core import DataLoaders
from fastai.vision.core import imagenet_stats

from foldwise.errors import FoldwiseError
from foldwise.tasks.batches import CachedBatches
from foldwise.tasks.ensemble import EnsembleModel, load_weights
from foldwise.tasks.predict import label_names_out, model_item_size
from foldwise.tasks.train import build_learner, plain_model

InputType = Literal["uint8", "float"]
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
ONNX_FILE, METADATA_FILE = "model.onnx", "model.json"
CHECK_TOLERANCE = 1e-4  # onnxruntime against PyTorch, on probabilities


class ExportError(FoldwiseError):
    """An ensemble that cannot be exported, or an export that does not reproduce it."""


class EnsembleGraph(torch.nn.Module):
    """The folds as one module: images -> the mean of the folds' sigmoid outputs."""

    def __init__(self, folds: list[torch.nn.Module], size: int, pretrained: bool, input_type: InputType):
        super().__init__()
        self.folds = torch.nn.ModuleList(folds)
        self.size, self.input_type = size, input_type
        mean, std = imagenet_stats if pretrained else ([0.0] * 3, [1.0] * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_type == "uint8":  # N x H x W x 3, as image decoders give them
            images = images.permute(0, 3, 1, 2).float() / 255
        images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=True)
        images = (images - self.mean) / self.std
        return torch.stack([torch.sigmoid(fold(images)) for fold in self.folds]).mean(dim=0)


def fold_modules(model: EnsembleModel) -> list[torch.nn.Module]:
    """Each fold's network, as trained (fastai's body and head), with its weights, on the CPU."""
    cpu = torch.device("cpu")
    architecture_only = model.config.model_copy(deep=True)
    architecture_only.model.pretrained = False  # the weights come from the folds
    architecture_only.train.compile = False  # a compiled wrapper cannot be exported
    n_labels, size = len(model.vocab), model.image_size
    empty = CachedBatches(
        np.zeros((0, size, size, 3), dtype=np.uint8),
        np.zeros(0, dtype=np.int64),
        np.zeros((0, n_labels), dtype=np.float32),
        size,
        architecture_only,
        cpu,
        shuffle=False,
    )
    modules = []
    for path in model.fold_paths:
        learn = build_learner(DataLoaders(empty, empty, device=cpu), n_labels, architecture_only, cpu)
        network = plain_model(learn)
        network.load_state_dict(load_weights(path))
        modules.append(network.float().eval())
    return modules


def example_input(input_type: InputType, size: int, count: int = 2, seed: int = 0) -> np.ndarray:
    random = np.random.default_rng(seed)
    if input_type == "uint8":
        return random.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    return random.random((count, 3, size, size), dtype=np.float32)


def write_onnx(graph: EnsembleGraph, path: Path, input_type: InputType, item_size: int) -> None:
    """torch.export's ONNX exporter, the batch and the image's height and width dynamic."""
    for chatty in ("onnxscript", "onnx_ir"):  # a line per optimisation pass, nothing to act on
        logging.getLogger(chatty).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1)
    height, width = torch.export.Dim("height", min=2), torch.export.Dim("width", min=2)
    spatial = {1: height, 2: width} if input_type == "uint8" else {2: height, 3: width}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notices, nothing to act on
        program = torch.onnx.export(
            graph,
            (torch.from_numpy(example_input(input_type, item_size)),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch} | spatial,),
            verbose=False,
        )
    program.save(str(path))


def onnx_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def check_against_pytorch(graph: EnsembleGraph, path: Path, input_type: InputType, item_size: int) -> float:
    """The largest difference between onnxruntime and PyTorch on images the export did not see."""
    images = example_input(input_type, item_size, count=3, seed=1)
    with torch.no_grad():
        expected = graph(torch.from_numpy(images)).numpy()
    difference = float(np.abs(onnx_probabilities(path, images) - expected).max())
    if not difference <= CHECK_TOLERANCE:
        raise ExportError(
            f"the ONNX model differs from PyTorch by {difference:.2g} (more than {CHECK_TOLERANCE:g}), so "
            "nothing was written: the exporter mistranslates this architecture; please report it"
        )
    return difference


def preprocessing(model: EnsembleModel, input_type: InputType) -> dict:
    size, item = model.image_size, model_item_size(model)
    layout = (
        "N x H x W x 3, uint8 RGB (0-255)"
        if input_type == "uint8"
        else "N x 3 x H x W, float32 RGB in [0, 1]"
    )
    return {
        "input": INPUT_NAME,
        "layout": layout,
        "item_size": item,
        "stage_size": size,
        "normalisation": "ImageNet mean and std" if model.config.model.pretrained else "none ([0, 1])",
        "steps": [
            "decode the image as RGB, upright by its EXIF orientation, in sRGB by its ICC profile",
            "take its centred square (side: the shorter side)",
            f"resize it to {item} x {item} with PIL's bilinear filter (Foldwise's cached item: stage size "
            f"{size} x augment.presize {model.config.augment.presize:g}, rounded up)",
            f"feed it: the graph resizes to {size} x {size} (bilinear, corners aligned), normalises, "
            "runs every fold and averages their sigmoid outputs",
            "compare each probability with its label's threshold",
        ],
    }


@dataclass(frozen=True)
class Exported:
    onnx_path: Path
    metadata_path: Path
    run_id: int
    n_folds: int
    n_labels: int
    max_difference: float  # onnxruntime against PyTorch, on the check images


def export_model(model: EnsembleModel, out: Path, input_type: InputType = "uint8") -> Exported:
    """Write `out/model.onnx` and `out/model.json`; both appear only once the graph passed its check."""
    if input_type not in ("uint8", "float"):
        raise ExportError(f"input type must be 'uint8' or 'float', not {input_type!r}")
    item = model_item_size(model)
    graph = EnsembleGraph(fold_modules(model), model.image_size, model.config.model.pretrained, input_type)
    to_file = label_names_out(model.config)
    metadata = {
        "run_id": model.run_id,
        "arch": model.config.model.arch,
        "folds": len(model.fold_paths),
        "labels": model.vocab,
        "label_ids": [to_file.get(label, label) for label in model.vocab],
        "thresholds": [float(t) for t in model.thresholds],
        "output": {
            "name": OUTPUT_NAME,
            "shape": "N x labels, in the order of `labels`",
            "meaning": "the mean of the folds' sigmoid probabilities; a label is predicted where its "
            "probability >= its threshold",
        },
        "preprocessing": preprocessing(model, input_type),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "foldwise": version("foldwise"),
    }
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as staging:
        staged = Path(staging) / ONNX_FILE
        write_onnx(graph, staged, input_type, item)
        difference = check_against_pytorch(graph, staged, input_type, item)
        metadata["checked_max_difference"] = difference
        (Path(staging) / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        # The graph (and its weights, if external) first, then the JSON that describes them.
        for written in sorted(Path(staging).iterdir(), key=lambda path: path.name == METADATA_FILE):
            shutil.move(written, out / written.name)
    return Exported(
        out / ONNX_FILE,
        out / METADATA_FILE,
        model.run_id,
        len(model.fold_paths),
        len(model.vocab),
        difference,
    )
