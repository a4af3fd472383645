"""What duplicate groups change: out-of-fold score minus held-out test score, with and without grouping.

Demo images (digits on a noisy ground, several labels each) with planted duplicates: a share of the
training images gets one to three copies, each an exact byte copy, a JPEG re-encoding or a resized
copy, under new ids and with the same labels, as in the seeds' data sets. Folds are made by
`plan_folds`, once with every sample alone and once with the groups a fold build makes (content hash
and pHash, as a pull computes them); a nearest-neighbour classifier (a memoriser: the model that
gains most from a copy in its training folds) is scored out of fold and on fresh test images that
have no copy in the training data. An honest out-of-fold score is close to the test score; a
leaking one is above it. Printed per seed: the groups planted and found, F2 (samples) out of fold, on the test set, and the gap.

    python -m benchmarks.bench_duplicates [--images 600] [--copied 0.4] [--seeds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io

import numpy as np
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

from foldwise.config import DataConfig, FoldsConfig
from foldwise.db.samples import StoredSample
from foldwise.duplicates import Duplicates
from foldwise.metrics import fbeta
from foldwise.tasks.demo import load_digits, make_image
from foldwise.tasks.folds import plan_folds
from foldwise.tasks.image_checks import perceptual_hash

FEATURE_SIDE = 24  # pixels per side of the grey image a neighbour is found by


def encoded(pixels: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """The image file of `pixels`: PNG, or a planted near copy (JPEG re-encoded, or resized)."""
    image = Image.fromarray(pixels)
    if kind == "resized":
        side = int(image.width * rng.uniform(0.6, 0.9))
        image = image.resize((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if kind == "reencoded":
        image.save(buffer, format="JPEG", quality=int(rng.integers(40, 80)))
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def features(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as image:
        grey = image.convert("L").resize((FEATURE_SIDE, FEATURE_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float32).ravel() / 255


def make_data(n_images: int, copied: float, seed: int):
    """Training files (originals and planted copies) with their labels, fresh test files, and how many
    originals got copies."""
    rng = np.random.default_rng(seed)
    digits = load_digits()
    glyphs_by_digit = [digits.images[digits.target == d] for d in range(10)]
    originals = [make_image(rng, glyphs_by_digit) for _ in range(n_images)]
    files = [(encoded(pixels, "png", rng), frozenset(labels)) for pixels, labels in originals]
    planted = rng.choice(n_images, int(n_images * copied), replace=False)
    for index in planted:
        pixels, labels = originals[index]
        for _ in range(int(rng.integers(1, 4))):
            kind = str(rng.choice(["exact", "reencoded", "resized"]))
            content = files[index][0] if kind == "exact" else encoded(pixels, kind, rng)
            files.append((content, frozenset(labels)))
    test = [make_image(rng, glyphs_by_digit) for _ in range(n_images // 2)]
    return files, [(encoded(pixels, "png", rng), frozenset(labels)) for pixels, labels in test], len(planted)


def as_samples(files: list[tuple[bytes, frozenset[str]]]) -> list[StoredSample]:
    """The files as a pull records them: content hash and perceptual hash."""
    samples = []
    for index, (content, labels) in enumerate(files):
        with Image.open(io.BytesIO(content)) as image:
            pixels = np.asarray(image.convert("RGB"))
        samples.append(
            StoredSample(
                index, f"s{index}", "", hashlib.sha256(content).hexdigest(), len(content), 0, False,
                "active", None, labels, perceptual_hash(pixels),
            )
        )  # fmt: skip
    return samples


def label_matrix(label_sets: list[frozenset[str]], names: list[str]) -> np.ndarray:
    return np.array([[name in labels for name in names] for labels in label_sets], dtype=np.int8)


def out_of_fold_score(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> float:
    predicted = np.zeros_like(y)
    for fold in np.unique(folds):
        model = KNeighborsClassifier(n_neighbors=1).fit(x[folds != fold], y[folds != fold])
        predicted[folds == fold] = model.predict(x[folds == fold])
    return fbeta(predicted, y, beta=2, average="samples")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600, help="original training images")
    parser.add_argument("--copied", type=float, default=0.4, help="share of them given copies")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    distance = DataConfig().near_duplicate_distance  # the default, as a pull groups
    print(f"near duplicates within {distance} bits of pHash; 1-nearest neighbour")
    print("seed  samples  planted  groups  | grouped: oof   test   gap  | ungrouped: oof   test   gap")
    for seed in range(args.seeds):
        files, test, n_planted = make_data(args.images, args.copied, seed)
        samples = as_samples(files)
        duplicates = Duplicates.of(samples, distance)
        names = sorted(set().union(*(labels for _, labels in files)))
        x = np.stack([features(content) for content, _ in files])
        y = label_matrix([labels for _, labels in files], names)
        model = KNeighborsClassifier(n_neighbors=1).fit(x, y)
        test_y = label_matrix([labels for _, labels in test], names)
        test_score = fbeta(model.predict(np.stack([features(c) for c, _ in test])), test_y, 2, "samples")
        settings = FoldsConfig(n_folds=args.folds, seed=seed, strategy="rebuild")
        row = f"{seed:>4}  {len(files):>7}  {n_planted:>7}  {len(duplicates.groups):>6}  |"
        for groups in (duplicates.group_of, None):
            plan = plan_folds(
                [s.id for s in samples],
                [s.labels for s in samples],
                [False] * len(samples),
                settings,
                None,
                groups,
            )
            oof = out_of_fold_score(x, y, plan.folds)
            row += f"        {oof:.3f}  {test_score:.3f}  {oof - test_score:+.3f} |"
        print(row)


if __name__ == "__main__":
    main()
