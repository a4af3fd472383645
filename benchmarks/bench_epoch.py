"""How close a Foldwise training epoch comes to the model's own speed.

The training part of one epoch through Foldwise's real loop (fastai Learner, cached uint8 batches
augmented on the device, the precision and memory format the config picks) divided by the time of
pure forward/backward/step passes of the same model on random tensors already on the device, for
the same number of batches of the same size. 1.0 would mean the data path costs nothing. Target on
a GPU: at most 1.15.

    python -m benchmarks.bench_epoch [--archs resnet18] [--sizes 64] [--images 2000] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders

from foldwise.config import load_config
from foldwise.tasks.batches import CachedBatches
from foldwise.tasks.cache import item_size
from foldwise.tasks.train import build_learner, choose_device, plain_model, use_mixed_precision

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64
N_CLASSES = 17


class TrainingTime(Callback):
    """The wall time of the training passes of each epoch (validation excluded)."""

    def before_train(self):
        self.synchronize()
        self.started = time.perf_counter()

    def after_train(self):
        self.synchronize()
        self.seconds = time.perf_counter() - self.started

    def synchronize(self):
        if self.dls.device.type == "cuda":
            torch.cuda.synchronize()


def pure_steps(
    model: torch.nn.Module,
    n_batches: int,
    size: int,
    device: torch.device,
    autocast: bool,
    channels_last: bool,
) -> float:
    """Forward, loss, backward and step on random tensors already on the device."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_function = torch.nn.BCEWithLogitsLoss()
    images = torch.randn(BATCH, 3, size, size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 2, (BATCH, N_CLASSES), device=device).float()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_function(model(images).float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(n_batches):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", nargs="+", default=["resnet18"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "on", "off"])
    args = parser.parse_args()
    device = choose_device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"device: {name}, batch {BATCH}, {args.images} images, torch {torch.__version__}")
    print("| arch | size | epoch (training) | pure fwd/bwd | ratio | images/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for arch in args.archs:
            for size in args.sizes:
                config = load_config(
                    ROOT / "configs" / "demo.toml",
                    [
                        f"data_home={folder}",
                        f"model.arch={arch}",
                        f"train.device={args.device}",
                        f"train.mixed_precision={args.mixed_precision}",
                        f"train.batch_size={BATCH}",
                        f"train.stages=[{{size={size}, epochs=1, lr=1e-3}}]",
                    ],
                )
                item = item_size(config.train.stages[0], config.augment.presize)
                rng = np.random.default_rng(0)
                pixels = rng.integers(0, 255, (args.images, item, item, 3), dtype=np.uint8)
                targets = (rng.random((args.images, N_CLASSES)) < 0.2).astype(np.float32)
                train = CachedBatches(
                    pixels, np.arange(args.images), targets, size, config, device, shuffle=True
                )
                valid = CachedBatches(
                    pixels, np.arange(BATCH), targets[:BATCH], size, config, device, shuffle=False
                )
                learn = build_learner(DataLoaders(train, valid, device=device), N_CLASSES, config, device)
                timer = TrainingTime()
                learn.fit(1, 1e-3, cbs=[timer])  # warm-up epoch: kernels chosen, memory allocated
                learn.fit(1, 1e-3, cbs=[timer])
                autocast = use_mixed_precision(config.train.mixed_precision, device)
                pure = pure_steps(
                    plain_model(learn), len(train), size, device, autocast, config.train.channels_last
                )
                print(
                    f"| {arch} | {size} px | {timer.seconds:.2f} s | {pure:.2f} s | x{timer.seconds / pure:.2f} "
                    f"| {len(train) * BATCH / timer.seconds:,.0f} |"
                )


if __name__ == "__main__":
    main()
