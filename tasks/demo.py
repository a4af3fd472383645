"""Offline demo data: multi-digit images made from scikit-learn's bundled digits.

Each image shows one or two different digits side by side, each nearly the image's height, on a
grey, noisy background; its labels are the digits present ("zero" ... "nine"), with skewed
frequencies so that "eight" and "nine" are rare. Each digit is drawn in an ink colour of its own
(INKS): the demo must show a network trained from scratch learning within a minute of CPU, and from a
few hundred images the colour cue is learnt in a few epochs where 8 x 8 scribbles alone are not
(docs/benchmarks.md). The hard version,
without it, is benchmarks/quality_data.py. Data arrives in drops, like labeled batches in a real
source folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_WEIGHTS = 1.0 / np.arange(1, 11) ** 1.3  # "zero" common, "nine" rare
IMAGE_SIZE = 64
FIRST_DROP_SIZE = 1000
LATER_DROP_SIZE = 200
INKS = np.array(  # one per digit, "zero" to "nine": distinct on a grey background
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [0, 0, 0],
        [255, 255, 255],
    ],
    dtype=float,
)
LABEL_FILE = "labels_drop{:02d}.csv"
IMAGE_DIR = "images"


@dataclass(frozen=True)
class Drop:
    number: int
    label_file: Path
    n_images: int


def delivered_drops(source: Path) -> list[int]:
    return sorted(int(path.stem.removeprefix("labels_drop")) for path in source.glob("labels_drop*.csv"))


def _background(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(90, 170)
    return np.full((IMAGE_SIZE, IMAGE_SIZE, 3), grey) + rng.normal(0, 8, (IMAGE_SIZE, IMAGE_SIZE, 3))


def _draw_digit(canvas: np.ndarray, glyph: np.ndarray, ink: np.ndarray, side: int, rng) -> None:
    """A glyph in the left (0) or right (1) half, 26 to 32 pixels high."""
    half = IMAGE_SIZE // 2
    size = int(rng.integers(26, 33))
    alpha = np.asarray(Image.fromarray((glyph * 255 / 16).astype(np.uint8)).resize((size, size)), float) / 255
    top = int(rng.integers(0, IMAGE_SIZE - size + 1))
    left = side * half + int(rng.integers(0, half - size + 1))
    region = canvas[top : top + size, left : left + size]
    canvas[top : top + size, left : left + size] = region * (1 - alpha[..., None]) + ink * alpha[..., None]


def make_image(rng: np.random.Generator, glyphs_by_digit: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    n_digits = int(rng.choice([1, 2]))
    digits = rng.choice(10, size=n_digits, replace=False, p=DIGIT_WEIGHTS / DIGIT_WEIGHTS.sum())
    sides = rng.choice(2, size=n_digits, replace=False)
    canvas = _background(rng)
    for digit, side in zip(digits, sides, strict=True):
        glyphs = glyphs_by_digit[digit]
        _draw_digit(canvas, glyphs[rng.integers(len(glyphs))], INKS[digit], int(side), rng)
    return np.clip(canvas, 0, 255).astype(np.uint8), [DIGIT_NAMES[d] for d in sorted(digits)]


def deliver_drop(source: Path, seed: int = 0, n_images: int | None = None) -> Drop:
    """Write the next drop (images, then its label file) into the source folder."""
    number = (delivered_drops(source) or [0])[-1] + 1
    n_images = n_images or (FIRST_DROP_SIZE if number == 1 else LATER_DROP_SIZE)
    rng = np.random.default_rng([seed, number])
    digits = load_digits()
    glyphs_by_digit = [digits.images[digits.target == d] for d in range(10)]
    image_dir = source / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n_images):
        pixels, labels = make_image(rng, glyphs_by_digit)
        name = f"d{number:02d}_{index:05d}"
        Image.fromarray(pixels).save(image_dir / f"{name}.png")
        rows.append((name, " ".join(labels)))
    label_file = source / LABEL_FILE.format(number)
    partial = label_file.with_suffix(".csv.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_name", "tags"])
        writer.writerows(rows)
    os.replace(partial, label_file)  # a pull never sees half a label file
    return Drop(number, label_file, n_images)
