"""Multi-label images harder than the demo, in Planet's format, made offline from what scikit-learn
ships: its handwritten digits drawn on crops of its two sample photographs.

- 10 labels (the digits), with skewed frequencies: "zero" on half the images, "eight" and "nine" on
  2-3 % of them;
- co-occurrence: "eight" mostly comes with "three", "seven" with "one";
- distractors: scrambled glyphs, drawn like digits but no label;
- textured, colourful backgrounds (the photographs), ink that contrasts with them;
- disjoint instances: the train and test sets draw their glyphs from disjoint halves of the digits.

    write_planet_dataset(folder, n_images, split="train"|"test", seed)
writes `folder/train_v2.csv` (`image_name,tags`) and `folder/train-jpg/<image_name>.jpg`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FREQUENCY = np.array([0.50, 0.30, 0.22, 0.16, 0.12, 0.09, 0.06, 0.05, 0.025, 0.02])
SIDE = 64
CELL = SIDE // 2


def glyph_pools(split: str) -> list[np.ndarray]:
    """The glyphs of each digit for this split: even-indexed instances train, odd ones test."""
    digits = load_digits()
    parity = 0 if split == "train" else 1
    return [digits.images[digits.target == d][parity::2] for d in range(10)]


def label_set(rng: np.random.Generator) -> set[int]:
    present = {d for d in range(10) if rng.random() < FREQUENCY[d]}
    if 8 in present and rng.random() < 0.7:
        present.add(3)
    if 7 in present and rng.random() < 0.7:
        present.add(1)
    if not present:
        present.add(int(rng.choice(10, p=FREQUENCY / FREQUENCY.sum())))
    return set(sorted(present)[:4])  # four cells at most


def background(rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    crop = int(rng.integers(48, 160))
    top, left = int(rng.integers(0, photo.shape[0] - crop)), int(rng.integers(0, photo.shape[1] - crop))
    region = Image.fromarray(photo[top : top + crop, left : left + crop]).resize((SIDE, SIDE))
    return np.asarray(region, dtype=float) * rng.uniform(0.6, 1.2) + rng.normal(0, 8, (SIDE, SIDE, 3))


def draw(canvas: np.ndarray, glyph: np.ndarray, cell: int, rng: np.random.Generator) -> None:
    size = int(rng.integers(17, 27))
    alpha = np.asarray(Image.fromarray((glyph * 255 / 16).astype(np.uint8)).resize((size, size)), float) / 255
    top = (cell // 2) * CELL + int(rng.integers(0, CELL - size + 1))
    left = (cell % 2) * CELL + int(rng.integers(0, CELL - size + 1))
    region = canvas[top : top + size, left : left + size]
    ink = np.where(region.mean(axis=(0, 1)) > 128, rng.uniform(0, 70, 3), rng.uniform(185, 255, 3))
    canvas[top : top + size, left : left + size] = region * (1 - alpha[..., None]) + ink * alpha[..., None]


def scrambled(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A glyph's strokes shuffled into a shape that is no digit."""
    blocks = glyph.reshape(4, 2, 4, 2).transpose(0, 2, 1, 3).reshape(16, 2, 2)
    return blocks[rng.permutation(16)].reshape(4, 4, 2, 2).transpose(0, 2, 1, 3).reshape(8, 8)


def write_planet_dataset(folder: Path, n_images: int, split: str, seed: int = 0) -> Path:
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    pools = glyph_pools(split)
    photos = list(load_sample_images().images)
    images = folder / "train-jpg"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n_images):
        labels = label_set(rng)
        cells = list(rng.permutation(4))
        canvas = background(rng, photos)
        for digit in labels:
            draw(canvas, pools[digit][rng.integers(len(pools[digit]))], cells.pop(), rng)
        for _ in range(min(len(cells), int(rng.integers(0, 3)))):  # distractors in the free cells
            other = pools[rng.integers(10)]
            draw(canvas, scrambled(other[rng.integers(len(other))], rng), cells.pop(), rng)
        name = f"{split}_{index}"
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(images / f"{name}.jpg", quality=92)
        rows.append((name, " ".join(NAMES[d] for d in sorted(labels))))
    label_file = folder / "train_v2.csv"
    with label_file.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_name", "tags"])
        writer.writerows(rows)
    return label_file
