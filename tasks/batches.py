"""Batches of cached images, augmented on the training device.

A batch is one gather from the memory-mapped items of the image cache (uint8, presized), moved to the
device as uint8 (pinned memory and a non-blocking copy on CUDA: a quarter of the bytes of floats),
and there made floats, augmented in one resampling pass (tasks/augment.py: fastai's crops, flips,
rotation, zoom and lighting, as `augment` configures them) or, for validation, resized, then
normalised. Nothing is decoded and nothing runs per item in Python.
With `train.num_workers` threads, the next batches are gathered while the model computes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from fastai.torch_core import TensorImage
from fastai.vision.augment import aug_transforms
from fastai.vision.core import imagenet_stats
from fasttransform import Pipeline

from foldwise.config import AugmentConfig, FoldwiseConfig
from foldwise.tasks.augment import augment_batch, normalise, resize_batch


def batch_transforms(size: int, augment: AugmentConfig) -> list:
    return aug_transforms(
        size=size,
        min_scale=augment.min_scale,
        flip_vert=augment.flip_vert,
        do_flip=augment.flip,
        max_rotate=augment.max_rotate,
        max_lighting=augment.max_lighting,
        max_warp=augment.max_warp,
    )


def multi_hot(label_sets: list[list[str]], vocab: list[str]) -> np.ndarray:
    column = {label: index for index, label in enumerate(vocab)}
    targets = np.zeros((len(label_sets), len(vocab)), dtype=np.float32)
    for row, labels in enumerate(label_sets):
        targets[row, [column[label] for label in labels if label in column]] = 1.0
    return targets


def rarity_weights(targets: np.ndarray) -> np.ndarray:
    """A sample's chance to be drawn: the square root of its rarest label's inverse frequency (samples
    without labels count as the most common)."""
    frequency = targets.mean(axis=0).clip(min=1e-6)
    inverse = np.where(targets > 0, 1 / frequency, 0).max(axis=1)
    return np.sqrt(np.where(inverse > 0, inverse, 1 / frequency.max()))


def auto_workers(setting: int | str, device: torch.device) -> int:
    """'auto': two gathering threads on CUDA (the GPU waits otherwise), none on a CPU (the gather costs
    a millisecond a batch; a thread would only take a core from the model)."""
    if setting != "auto":
        return int(setting)
    return 2 if device.type == "cuda" else 0


class CachedBatches:
    """A loader over cached items that fastai's Learner can fit and predict with."""

    def __init__(
        self,
        pixels: np.ndarray,
        rows: np.ndarray,
        targets: np.ndarray,
        size: int,
        config: FoldwiseConfig,
        device: torch.device,
        shuffle: bool,
        augment: bool | None = None,
        seed: int = 0,
        weights: np.ndarray | None = None,
    ):
        """`shuffle`: a training loader (shuffled, augmented, incomplete last batch dropped); else the
        samples in order, all of them, augmented only if `augment` (test-time augmentation)."""
        self.pixels, self.rows, self.targets = pixels, np.asarray(rows, dtype=np.int64), targets
        self.device, self.shuffle, self.drop_last = device, shuffle, shuffle
        self.batch_size = config.train.batch_size
        # A training loader drops an incomplete last batch; a fold smaller than a batch would then
        # train on nothing, so such a loader's batch shrinks to fit.
        if shuffle:
            self.batch_size = max(1, min(self.batch_size, len(self.rows)))
        self.size, self.settings = size, config.augment
        self.randomly = shuffle if augment is None else augment
        # A perspective warp has no affine form (tasks/augment.py): fastai's transforms then do it all.
        self.warping = (
            Pipeline(batch_transforms(size, config.augment), split_idx=0) if config.augment.max_warp else None
        )
        self.generator = torch.Generator().manual_seed(seed)
        # A pretrained model expects ImageNet's normalisation; a model trained from scratch sees [0, 1].
        mean, std = imagenet_stats if config.model.pretrained else ([0.0] * 3, [1.0] * 3)
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self.workers = auto_workers(config.train.num_workers, device)
        self.random = np.random.default_rng(seed)
        self.weights = None if weights is None else weights / weights.sum()
        self.buffer: torch.Tensor | None = None

    def __len__(self) -> int:
        count = len(self.rows) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def to(self, device: torch.device) -> CachedBatches:
        self.device = torch.device(device)
        return self

    def gather(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch from the memmap. A training batch is read in the order of its rows on disk (the
        fastest read; order within a batch does not matter there); any other keeps the caller's order,
        which its predictions must follow."""
        if self.shuffle:
            positions = positions[np.argsort(self.rows[positions], kind="stable")]
        images = torch.from_numpy(np.ascontiguousarray(self.pixels[self.rows[positions]]))
        targets = torch.from_numpy(self.targets[positions])
        if self.device.type == "cuda":
            images, targets = images.pin_memory(), targets.pin_memory()
        return images, targets

    def to_device(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        images = images.to(self.device, non_blocking=non_blocking).permute(0, 3, 1, 2)
        if not self.randomly:
            images = resize_batch(self.floats(images), self.size, self.mean, self.std)
        elif self.warping is None:
            images = augment_batch(
                self.floats(images), self.size, self.settings, self.generator, self.mean, self.std
            )
        else:
            images = normalise(self.warping(TensorImage(images.float().div_(255))), self.mean, self.std)
        return images, targets.to(self.device, non_blocking=non_blocking)

    def floats(self, images: torch.Tensor) -> torch.Tensor:
        """The uint8 batch as floats (0..255) in a buffer reused from batch to batch (the resampling
        reads it and writes a new tensor): on a CPU a fresh tensor of this size is fresh pages from
        the kernel each time, which costs more than the conversion itself."""
        if self.buffer is None or self.buffer.shape != images.shape or self.buffer.device != images.device:
            self.buffer = torch.empty_like(images, dtype=torch.float32)
        return self.buffer.copy_(images)

    def batches(self) -> list[np.ndarray]:
        if not self.shuffle:
            order = np.arange(len(self.rows))
        elif self.weights is None:
            order = self.random.permutation(len(self.rows))
        else:  # rare-label sampling: an epoch of the same length, drawn by weight
            order = self.random.choice(len(self.rows), size=len(self.rows), p=self.weights)
        return [
            order[start : start + self.batch_size]
            for start in range(0, len(self) * self.batch_size, self.batch_size)
        ]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.batches()
        if not self.workers:
            for positions in batches:
                yield self.to_device(*self.gather(positions))
            return
        with ThreadPoolExecutor(self.workers) as pool:
            ahead = deque(pool.submit(self.gather, positions) for positions in batches[: self.workers])
            for index in range(len(batches)):
                images, targets = ahead.popleft().result()
                if index + self.workers < len(batches):
                    ahead.append(pool.submit(self.gather, batches[index + self.workers]))
                yield self.to_device(images, targets)
