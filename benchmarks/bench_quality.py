"""Model quality and run time against the seeds' recipes, on data harder than the demo
(benchmarks/quality_data.py: Planet's format, skewed labels down to 2 %, co-occurrence, distractors,
disjoint train and test instances). In one process, on the same train/test split, with the same
architecture, augmentation, stages and epochs:

(a) the seeds' single-split recipe: fastai's DataBlock item pipeline, a random 80/20 split, the
    stages one after the other (progressive resizing), threshold 0.2 for every class;
(b) the seeds' k-fold recipe: the same on each fold of a multi-label stratified k-fold split, the
    folds' test predictions averaged, threshold 0.2;
(c) Foldwise's recipe for the config: a real `retrain` flow run (pull, image cache, folds, training,
    thresholds), then its ensemble and thresholds on the test images. From scratch, Foldwise's head
    (`model.head = "auto"`) is the network's own (average pooling, one linear layer), where the seeds
    keep fastai's (made for a pretrained body); `--set model.head=fastai` measures (c) with fastai's.
    Images with rare labels are drawn more often (`train.rare_label_sampling`, on by default).

Printed: test F2 (samples), macro F1, F1 of the three rarest labels, wall time; a markdown table.
The gate set is off for (c) (`gate.fraction = 0`): the test set plays its part, and (c) trains on
the same images as (b).

    python -m benchmarks.bench_quality [--train 3000] [--test 800] [--folds 3] [--recipes a b c]
        [--set key=value ...]

Fewer training images teach a resnet18 from scratch next to nothing in any recipe: trained on 1,200
for 12 epochs, it memorised them (training loss 0.01, test loss 0.34), and the recipes differed only
in their thresholds.

`--recipes c --set ...` measures a variant of Foldwise's recipe alone (the seeds' figures do not depend
on `--set` options outside `RECIPE`'s keys).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.progress import ProgressCallback
from fastai.data.block import DataBlock, MultiCategoryBlock
from fastai.data.transforms import ColReader, IndexSplitter
from fastai.vision.augment import Resize
from fastai.vision.data import ImageBlock
from fastai.vision.learner import vision_learner
from fastcore.basics import noop
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from prefect.testing.utilities import prefect_test_harness
from sklearn.metrics import f1_score, fbeta_score

from benchmarks.quality_data import NAMES, write_planet_dataset
from foldwise.cli.prefect_server import turn_off_telemetry
from foldwise.config import FoldwiseConfig, load_config, resolve_arch
from foldwise.flows.retrain import retrain
from foldwise.tasks.batches import batch_transforms
from foldwise.tasks.ensemble import load_model
from foldwise.tasks.predict import predict_images

ROOT = Path(__file__).resolve().parents[1]
SEEDS_THRESHOLD = 0.2
# The benchmark's recipe: resnet18 from scratch (offline), 48 px then 64 px, digits keep their
# orientation (no flips), mild crops so that no digit is cut out of its image.
RECIPE = [
    "model.arch=resnet18",
    "model.pretrained=false",
    "train.batch_size=64",
    "train.stages=[{size=48, epochs=4, lr=1e-2}, {size=64, epochs=3, lr=5e-3}]",
    "augment.flip=false",
    "augment.flip_vert=false",
    "augment.min_scale=0.9",
    "augment.max_rotate=5",
    "gate.fraction=0",
    "thresholds.metric='fbeta_samples'",
    "thresholds.beta=2.0",
    "data.label_files='train_v2.csv'",
    "data.image_dir='train-jpg'",
    "data.image_suffix='.jpg'",
]


def truth_of(frame: pd.DataFrame) -> np.ndarray:
    return np.array([[name in tags.split() for name in NAMES] for tags in frame["tags"]], dtype=int)


def scores(probabilities: np.ndarray, thresholds: np.ndarray, truth: np.ndarray, rarest: list[int]) -> dict:
    predicted = (probabilities >= thresholds).astype(int)
    per_class = f1_score(truth, predicted, average=None, zero_division=0)
    return {
        "F2 (samples)": fbeta_score(truth, predicted, beta=2, average="samples", zero_division=0),
        "macro F1": f1_score(truth, predicted, average="macro", zero_division=0),
        **{f"F1 {NAMES[c]}": per_class[c] for c in rarest},
    }


def seeds_fold(
    frame: pd.DataFrame, valid: list[int], test: pd.DataFrame, config: FoldwiseConfig
) -> np.ndarray:
    """The notebooks' loop for one split: item pipeline, progressive resizing; test probabilities."""
    learn = None
    for stage in config.train.stages:
        block = DataBlock(
            blocks=(ImageBlock, MultiCategoryBlock(vocab=NAMES)),
            get_x=ColReader("path"),
            get_y=ColReader("tags", label_delim=" "),
            splitter=IndexSplitter(valid),
            item_tfms=Resize(math.ceil(stage.size * config.augment.presize)),
            batch_tfms=batch_transforms(stage.size, config.augment),
        )
        dls = block.dataloaders(frame, bs=config.train.batch_size, device=torch.device("cpu"))
        if learn is None:
            learn = vision_learner(dls, resolve_arch(config.model.arch), pretrained=False, n_out=len(NAMES))
            learn.remove_cb(ProgressCallback)
            learn.logger = noop
        else:
            learn.dls = dls
        learn.fit_one_cycle(stage.epochs, stage.lr)
    probabilities, _ = learn.get_preds(dl=learn.dls.test_dl(test))
    return probabilities.numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=800)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", choices=["a", "b", "c"], default=["a", "b", "c"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    args = parser.parse_args()
    turn_off_telemetry()
    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=120):
        root = Path(folder)
        write_planet_dataset(root / "train", args.train, "train")
        write_planet_dataset(root / "test", args.test, "test")
        config = load_config(
            ROOT / "configs" / "planet.toml",
            [
                f"source.path={root / 'train'}",
                f"data_home={root / 'home'}",
                f"folds.n_folds={args.folds}",
                "data.vocabulary=" + str(NAMES).replace("'", '"'),
                *RECIPE,
                *args.overrides,
            ],
        )
        train = pd.read_csv(root / "train" / "train_v2.csv")
        train["path"] = [str(root / "train" / "train-jpg" / f"{name}.jpg") for name in train["image_name"]]
        test = pd.read_csv(root / "test" / "train_v2.csv")
        test["path"] = [str(root / "test" / "train-jpg" / f"{name}.jpg") for name in test["image_name"]]
        truth = truth_of(test)
        rarest = list(np.argsort(truth_of(train).sum(axis=0))[:3])
        results = {}
        seed_threshold = np.full(len(NAMES), SEEDS_THRESHOLD)

        def single_split() -> tuple[np.ndarray, np.ndarray]:
            valid = list(np.random.default_rng(0).permutation(len(train))[: len(train) // 5])
            return seeds_fold(train, valid, test, config), seed_threshold

        def k_fold() -> tuple[np.ndarray, np.ndarray]:
            splitter = MultilabelStratifiedKFold(
                n_splits=args.folds, shuffle=True, random_state=config.folds.seed
            )
            folds = [
                seeds_fold(train, list(valid_index), test, config)
                for _, valid_index in splitter.split(np.zeros(len(train)), truth_of(train))
            ]
            return np.mean(folds, axis=0), seed_threshold

        def foldwise() -> tuple[np.ndarray, np.ndarray]:
            summary = retrain(config)
            model = load_model(config, summary.run_id)
            predictions = predict_images(config, [root / "test" / "train-jpg"], model)
            order = [predictions.ids.index(name) for name in test["image_name"]]
            columns = [model.vocab.index(name) for name in NAMES]
            return predictions.probabilities[order][:, columns], model.thresholds[columns]

        recipes = {
            "a": ("(a) seeds, single split", single_split),
            "b": (f"(b) seeds, {args.folds}-fold", k_fold),
            "c": ("(c) Foldwise", foldwise),
        }
        for key in args.recipes:
            name, recipe = recipes[key]
            started = time.perf_counter()
            probabilities, thresholds = recipe()
            results[name] = (scores(probabilities, thresholds, truth, rarest), time.perf_counter() - started)

        metrics = list(next(iter(results.values()))[0])
        print(f"train {args.train}, test {args.test} images, {args.folds} folds, resnet18 from scratch, CPU")
        print(f"stages {[(s.size, s.epochs) for s in config.train.stages]}, overrides {args.overrides}")
        print("| recipe | " + " | ".join(metrics) + " | wall time |")
        print("|---" * (len(metrics) + 2) + "|")
        for name, (values, seconds) in results.items():
            print(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + f" | {seconds:.0f} s |")
        if "b" not in args.recipes or "c" not in args.recipes:
            return
        (b_scores, b_time), (c_scores, c_time) = (
            results[f"(b) seeds, {args.folds}-fold"],
            results["(c) Foldwise"],
        )
        print(
            f"Foldwise - (b): F2 {c_scores['F2 (samples)'] - b_scores['F2 (samples)']:+.4f}, "
            f"macro F1 {c_scores['macro F1'] - b_scores['macro F1']:+.4f}, wall time x{c_time / b_time:.2f}"
        )


if __name__ == "__main__":
    main()
