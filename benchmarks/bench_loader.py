"""Images per second into a training batch: Foldwise's data path against fastai's default item pipeline.

The same 2,000 photo-like 256 px JPEGs, at 64, 128 and 256 px (items presized 1.25x), batch 64,
training augmentation (fastai's `aug_transforms`, as Foldwise configures them), on the CPU:
- fastai: DataBlock(ImageBlock, MultiCategoryBlock), item_tfms=Resize(item size), batch_tfms=
  aug_transforms(size): decodes and resizes every image every epoch, `num_workers` = cores;
- Foldwise: the image cache (decoded once by the pull; that one-off cost is printed too) gathered
  into uint8 batches and augmented on the batch (tasks/batches.py).
One pass over the training loader each, after one warm-up pass; the ratio is printed per size.

    python benchmarks/bench_loader.py [--images 2000] [--sizes 64 128 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fastai.data.block import DataBlock, MultiCategoryBlock
from fastai.data.transforms import RandomSplitter
from fastai.vision.augment import Resize
from fastai.vision.data import ImageBlock

from benchmarks.photos import write_photos
from foldwise.config import load_config
from foldwise.tasks.batches import CachedBatches, batch_transforms
from foldwise.tasks.cache import CachedImage, ImageCache, ensure_cached, item_size

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64


def labels_of(path: Path):  # no return annotation: fastai's type dispatch reads it
    return ["even" if int(path.stem[1:]) % 2 == 0 else "odd"]


def images_per_second(loader, n_images: int) -> float:
    for _ in loader:  # warm-up: workers started, caches warm
        pass
    start = time.perf_counter()
    for images, _ in loader:
        images.sum().item()  # the batch really exists
    return n_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = write_photos(root / "photos", args.images)
        print(
            f"{args.images} JPEGs of 256 px, batch {BATCH}, CPU: {os.cpu_count()} cores, torch {torch.__version__}"
        )
        print("| size | fastai item pipeline | Foldwise (cached) | ratio | cache fill (one-off) |")
        print("|---|---|---|---|---|")
        for size in args.sizes:
            config = load_config(
                ROOT / "configs" / "demo.toml",
                [
                    f"data_home={root / 'home'}",
                    f"train.stages=[{{size={size}, epochs=1}}]",
                    f"train.batch_size={BATCH}",
                ],
            )
            item = item_size(config.train.stages[0], config.augment.presize)
            block = DataBlock(
                blocks=(ImageBlock, MultiCategoryBlock(vocab=["even", "odd"])),
                get_y=labels_of,
                splitter=RandomSplitter(0.0, seed=0),
                item_tfms=Resize(item),
                batch_tfms=batch_transforms(size, config.augment),
            )
            theirs = block.dataloaders(paths, bs=BATCH, device=torch.device("cpu")).train
            fastai_rate = images_per_second(theirs, len(theirs) * BATCH)

            images = [CachedImage(str(path), path.name, path.stem) for path in paths]
            start = time.perf_counter()
            ensure_cached(config, images, [item])
            fill = time.perf_counter() - start
            store = ImageCache(config, [item]).store(item)
            rows = np.array([store.rows[path.stem] for path in paths])
            targets = np.zeros((len(paths), 2), dtype=np.float32)
            ours = CachedBatches(
                store.pixels(), rows, targets, size, config, torch.device("cpu"), shuffle=True
            )
            our_rate = images_per_second(ours, len(ours) * BATCH)
            print(
                f"| {size} px | {fastai_rate:,.0f} img/s | {our_rate:,.0f} img/s | x{our_rate / fastai_rate:.1f} "
                f"| {fill:.1f} s ({len(paths) / fill:,.0f} img/s) |"
            )


if __name__ == "__main__":
    main()
