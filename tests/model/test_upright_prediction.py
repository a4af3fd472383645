"""A phone photo stored sideways with its EXIF orientation is predicted as its upright original is,
through the real prediction path (`predict_images`: decode, presize, the folds' mean)."""

from __future__ import annotations

import io

import numpy as np
from fastai.data.core import DataLoaders
from PIL import Image
from safetensors.torch import save_file

from foldwise.tasks.batches import CachedBatches
from foldwise.tasks.ensemble import EnsembleModel
from foldwise.tasks.images import ORIENTATION_TAG
from foldwise.tasks.predict import predict_images
from foldwise.tasks.train import build_learner, choose_device, plain_model
from tests.conftest import tiny_demo_config

VOCAB = ["zero", "one", "two"]


def untrained_ensemble(tmp_path, config) -> EnsembleModel:
    """An ensemble of two folds of the config's architecture, as initialised: what matters here is that
    its outputs depend on which way up an image is, not what it learned."""
    device = choose_device("cpu")
    size = config.train.stages[-1].size
    batches = CachedBatches(
        np.zeros((1, size, size, 3), dtype=np.uint8),
        np.arange(1),
        np.zeros((1, len(VOCAB)), dtype=np.float32),
        size,
        config,
        device,
        shuffle=False,
    )
    paths = []
    for fold in range(2):
        learn = build_learner(DataLoaders(batches, batches, device=device), len(VOCAB), config, device)
        path = tmp_path / f"fold{fold}.safetensors"
        save_file(
            {name: tensor.contiguous() for name, tensor in plain_model(learn).state_dict().items()}, path
        )
        paths.append(path)
    return EnsembleModel(1, VOCAB, np.full(len(VOCAB), 0.5), paths, config)


def test_an_exif_rotated_copy_gets_the_upright_originals_probabilities(tmp_path):
    config = tiny_demo_config(tmp_path, f"sqlite:///{tmp_path / 'f.db'}", "train.device='cpu'")
    model = untrained_ensemble(tmp_path, config)
    rows, columns = np.mgrid[0:96, 0:64]
    upright = np.stack([rows * 2, columns * 3, (rows + columns) % 256], axis=2).astype(np.uint8)
    upright[10:30, 5:20] = 255  # a mark in one corner: no turn leaves the image as it was
    sideways = np.rot90(upright, 1)  # stored turned a quarter counter-clockwise...
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # ...and declared so: "turn it a quarter clockwise to view"
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, pixels, options in [
        ("upright.jpg", upright, {}),
        ("phone.jpg", sideways, {"exif": exif.tobytes()}),
        ("phone_without_exif.jpg", sideways, {}),
    ]:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(
            buffer, "JPEG", quality=100, subsampling=0, **options
        )
        (folder / name).write_bytes(buffer.getvalue())

    predictions = predict_images(config, [folder], model)

    by_name = dict(zip([path.name for path in predictions.paths], predictions.probabilities, strict=True))
    turned = np.abs(by_name["phone.jpg"] - by_name["upright.jpg"]).max()
    # The model does see which way up an image is: read as stored, the phone's photo scores otherwise.
    as_stored = np.abs(by_name["phone_without_exif.jpg"] - by_name["upright.jpg"]).max()
    assert turned < 1e-3 and as_stored > 10 * turned  # what is left: JPEG's rounding of turned blocks
