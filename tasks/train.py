"""Train one fold of the ensemble with fastai: stages of growing image size (progressive resizing).

`train_fold` needs only its inputs (config, run id, fold set id, fold number) and writes its outputs
under the data home (weights, out-of-fold and holdout probabilities), so that it can run in another
process or host that shares the data home and the database.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastai.data.load
import fastai.vision.augment
import numpy as np
import pandas as pd
import torch
import torchvision
from fastai.callback import fp16, schedule  # noqa: F401  (they add fit_one_cycle, lr_find, to_bf16 to Learner)
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.core import Callback
from fastai.callback.mixup import MixUp
from fastai.callback.progress import ProgressCallback
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.data.block import DataBlock, MultiCategoryBlock
from fastai.data.transforms import IndexSplitter, Normalize
from fastai.learner import Learner
from fastai.metrics import FBetaMulti, accuracy_multi
from fastai.torch_core import set_seed
from fastai.vision.augment import Resize, aug_transforms
from fastai.vision.core import imagenet_stats
from fastai.vision.data import ImageBlock
from fastai.vision.learner import vision_learner
from fastcore.basics import noop
from safetensors.torch import save_file
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db import folds as fold_store
from db import samples as sample_store
from db import training as training_store
from db.folds import HOLDOUT
from db.session import session_scope, write_with_retries
from foldwise.config import AugmentConfig, ConfigError, FoldwiseConfig, StageConfig
from foldwise.errors import FoldwiseError
from tasks.images import read_image
from tasks.logs import get_logger
from tasks.models import EnsembleModel, atomic_file, load_model, load_weights, run_folder, warm_state


class PretrainedWeightsUnavailable(FoldwiseError, RuntimeError):
    """Pretrained weights were asked for and cannot be had (offline, no cache)."""


@dataclass(frozen=True)
class FoldOutput:
    """What a trained fold leaves behind: paths and numbers, never a Learner."""

    fold: int
    weights_path: Path
    predictions_path: Path  # npz: sample ids and probabilities, out-of-fold and holdout
    n_train: int
    n_valid: int
    seconds: float
    reused_from: int | None = None  # the unfinished run that trained it, when reused


class ImagePixels:
    """get_x: a row's image, decoded as Foldwise decodes every image (16-bit scaled, bombs refused)."""

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels

    # No return annotations here: fastai's type dispatch reads them and trips on `list[str]`.
    def __call__(self, row: pd.Series):
        return read_image(Path(row["image_path"]), self.max_pixels)


def sample_labels(row: pd.Series):  # no return annotation, as above
    return row["labels"]


class FoldRandom(random.Random):
    """A seeded generator for fastai's draws in this process; forked data workers use their own.

    fastai draws crops, flips and augmentation magnitudes from the global `random`, which Prefect's
    threads draw from too (websocket pings), so a run's results would depend on their timing.
    """

    Random = random.Random  # fastai.data.load calls `random.Random(seed)`

    def __init__(self, seed: int):
        self.owner = os.getpid()
        super().__init__(seed)

    # Every other method draws through these two.
    def random(self) -> float:
        return super().random() if os.getpid() == self.owner else random.random()

    def getrandbits(self, k: int) -> int:
        return super().getrandbits(k) if os.getpid() == self.owner else random.getrandbits(k)


@contextmanager
def fastai_random(seed: int):
    """Point fastai's modules that draw from `random` at a FoldRandom while one fold trains."""
    modules = (fastai.vision.augment, fastai.data.load)
    for module in modules:
        module.random = FoldRandom(seed)
    try:
        yield
    finally:
        for module in modules:
            module.random = random


def choose_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is available")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resolve_arch(name: str):
    """A torchvision model function by name, else the timm name (fastai builds timm models by name)."""
    builder = getattr(torchvision.models, name, None)
    if callable(builder) and name.islower():
        return builder
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"model.arch {name!r} is not a torchvision model, and timm is not installed"
        ) from None
    if name not in timm.list_models():
        raise ConfigError(f"model.arch {name!r} is neither a torchvision nor a timm model")
    return name


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


def fitting_batch_size(batch_size: int, n_train: int) -> int:
    """The training loader drops an incomplete last batch: a fold smaller than a batch would train on
    nothing, so its batches shrink to fit."""
    return max(1, min(batch_size, n_train))


def make_dataloaders(
    frame: pd.DataFrame,
    valid_index: list[int],
    vocab: list[str],
    size: int,
    config: FoldwiseConfig,
    device: torch.device,
):
    """Presizing: resize items larger than the stage size, then augment and crop on the batch.

    The same pipeline serves prediction: `test_dl` applies its validation side (center crop)."""
    normalize = [Normalize.from_stats(*imagenet_stats)] if config.model.pretrained else []
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock(vocab=vocab)),
        get_x=ImagePixels(config.data.max_image_pixels),
        get_y=sample_labels,
        splitter=IndexSplitter(valid_index),
        item_tfms=Resize(math.ceil(size * config.augment.presize)),
        # Explicit, so that prediction (without downloading pretrained weights) normalizes alike.
        batch_tfms=[*batch_transforms(size, config.augment), *normalize],
    )
    return block.dataloaders(
        frame,
        bs=fitting_batch_size(config.train.batch_size, len(frame) - len(valid_index)),
        num_workers=config.train.num_workers,
        device=device,
        seed=config.folds.seed,
    )


class RecordEpochs(Callback):
    """Writes each epoch's losses and metrics to the DB and logs one line: no progress bars in logs."""

    order = 60  # after the Recorder has the epoch's values

    def __init__(self, record, describe: str):
        self.record, self.describe = record, describe

    def before_epoch(self):
        self.started = time.perf_counter()

    def after_epoch(self):
        names = self.recorder.metric_names[1:-1]  # without 'epoch' and 'time'
        values = dict(zip(names, self.recorder.values[-1], strict=False))
        seconds = time.perf_counter() - self.started
        self.record(self.epoch, values, seconds)
        shown = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        get_logger(__name__).info(
            "%s epoch %d/%d: %s (%.1fs)", self.describe, self.epoch + 1, self.n_epoch, shown, seconds
        )


def build_learner(dls, config: FoldwiseConfig, device: torch.device) -> Learner:
    arch = resolve_arch(config.model.arch)
    metrics = [accuracy_multi, FBetaMulti(beta=config.thresholds.beta, average="samples", thresh=0.5)]
    try:
        learn = vision_learner(dls, arch, pretrained=config.model.pretrained, metrics=metrics)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; hub failures are RuntimeErrors
        if not config.model.pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f"cannot download weights for {config.model.arch} ({error}); pre-fill the torch cache "
            f"({torch.hub.get_dir()}/checkpoints) or set model.pretrained=false"
        ) from None
    learn.remove_cb(ProgressCallback)
    learn.logger = noop  # RecordEpochs logs each epoch; fastai would print raw value lists too
    if config.train.mixup:
        learn.add_cb(MixUp())
    if device.type == "cuda":
        if config.train.mixed_precision:
            learn.to_bf16() if torch.cuda.is_bf16_supported() else learn.to_fp16()
        if config.train.channels_last:
            learn.add_cb(ChannelsLast())
    return learn


def fit_stage(learn: Learner, stage: StageConfig, config: FoldwiseConfig) -> float:
    """Train one stage; returns the peak learning rate used."""
    lr = stage.lr if stage.lr is not None else float(learn.lr_find(show_plot=False).valley)
    pretrained = config.model.pretrained
    patience = config.train.early_stopping_patience
    callbacks = [EarlyStoppingCallback(monitor="valid_loss", patience=patience)] if patience else []
    if stage.frozen and pretrained:
        learn.freeze()
        learn.fit_one_cycle(stage.epochs, lr, cbs=callbacks)
    else:
        learn.unfreeze()
        # Discriminative rates: the early (pretrained) layers move least.
        learn.fit_one_cycle(stage.epochs, slice(lr / 100, lr) if pretrained else lr, cbs=callbacks)
    return lr


def predict(learn: Learner, frame: pd.DataFrame) -> np.ndarray:
    if frame.empty:
        return np.zeros((0, len(learn.dls.vocab)), dtype=np.float32)
    probabilities, _ = learn.get_preds(dl=learn.dls.test_dl(frame))
    return probabilities.float().numpy()


def load_fold_frame(
    config: FoldwiseConfig, fold_set: fold_store.StoredFoldSet
) -> tuple[pd.DataFrame, list[str]]:
    with session_scope(config.resolved_database_url()) as session:
        samples = sample_store.stored_samples(session=session)
    rows = [
        {
            "sample_id": s.id,
            "image_path": s.image_path,
            "labels": sorted(s.labels),
            "fold": fold_set.folds[s.id],
        }
        for s in samples.values()
        if s.id in fold_set.folds
    ]
    frame = pd.DataFrame(rows).sort_values("sample_id", ignore_index=True)
    vocab = sorted({label for labels in frame["labels"] for label in labels})
    return frame, vocab


def fit_stages(
    trainable: pd.DataFrame,
    valid_index: list[int],
    vocab: list[str],
    config: FoldwiseConfig,
    device: torch.device,
    record_epoch,
    fold: int,
    warm_from: EnsembleModel | None = None,
) -> Learner:
    """Progressive resizing: each stage continues from the previous stage's weights at its own size.

    Warm-started, the first stage begins from the champion's weights for this fold, and the stages
    are `train.warm_start_stages` when set."""
    stages = (warm_from and config.train.warm_start_stages) or config.train.stages
    learn = None
    for stage_number, stage in enumerate(stages):
        dls = make_dataloaders(trainable, valid_index, vocab, stage.size, config, device)
        if learn is None:
            learn = build_learner(dls, config, device)
            if warm_from is not None:
                source = load_weights(warm_from.fold_paths[fold])  # same folds: see warm_start_source
                learn.model.load_state_dict(
                    warm_state(learn.model.state_dict(), source, warm_from.vocab, vocab)
                )
        else:
            learn.dls = dls

        def record(epoch, values, seconds, stage_number=stage_number, size=stage.size):
            record_epoch(stage=stage_number, size=size, epoch=epoch, values=values, seconds=seconds)

        describe = f"fold {fold} stage {stage_number + 1}/{len(stages)} ({stage.size}px)"
        with learn.added_cbs(RecordEpochs(record, describe)):
            fit_stage(learn, stage, config)
    return learn


def fold_fingerprint(
    config: FoldwiseConfig, fold_set: fold_store.StoredFoldSet, fold: int, warm_from: int | None
) -> str:
    """Same data, same fold assignment, same training settings and starting weights: same fold."""
    training = config.model_dump(mode="json", include={"model", "train", "augment"})
    for where_or_how_long in ("device", "num_workers", "fold_timeout_minutes"):
        training["train"].pop(where_or_how_long)
    payload = {
        "dataset_version": fold_set.dataset_version,
        "folds": sorted(fold_set.folds.items()),
        "fold": fold,
        "seed": config.folds.seed,
        "training": training,
        "warm_from": warm_from,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def link_or_copy(source: Path, target: Path) -> None:
    with atomic_file(target) as partial:
        try:
            os.link(source, partial)
        except OSError:  # another file system, or no hard links there
            shutil.copy2(source, partial)


def reuse_fold(config: FoldwiseConfig, run_id: int, fold: int, fingerprint: str) -> FoldOutput | None:
    """A fold that an earlier, unfinished run trained on the same inputs: its files become this run's."""
    url = config.resolved_database_url()
    with session_scope(url) as session:
        found = next(
            (
                row
                for row in training_store.reusable_folds(
                    session=session, fingerprint=fingerprint, before_run=run_id
                )
                if Path(row.weights_path).is_file() and Path(row.predictions_path).is_file()
            ),
            None,
        )
    if found is None:
        return None
    folder = run_folder(config, run_id, create=True)
    output = FoldOutput(
        fold,
        folder / f"fold{fold}.safetensors",
        folder / f"fold{fold}_predictions.npz",
        found.n_train,
        found.n_valid,
        found.seconds,
        reused_from=found.run_id,
    )
    link_or_copy(Path(found.weights_path), output.weights_path)
    link_or_copy(Path(found.predictions_path), output.predictions_path)
    note = f"fold {fold} reused from run {found.run_id} (same data, folds and training settings)"

    def record(session: Session) -> None:
        record_fold(session, run_id, output, fingerprint, [])
        training_store.copy_epochs(session=session, from_run=found.run_id, to_run=run_id, fold=fold)
        training_store.add_note(session=session, run_id=run_id, note=note)

    write_with_retries(url, record)
    get_logger(__name__).info("%s: not trained again", note)
    return output


def record_fold(
    session: Session, run_id: int, output: FoldOutput, fingerprint: str, epochs: list[dict[str, Any]]
) -> None:
    training_store.add_fold_result(
        session=session,
        run_id=run_id,
        fold=output.fold,
        n_train=output.n_train,
        n_valid=output.n_valid,
        seconds=output.seconds,
        weights_path=str(output.weights_path),
        predictions_path=str(output.predictions_path),
        fingerprint=fingerprint,
        reused_from_run_id=output.reused_from,
    )
    for epoch in epochs:
        training_store.add_epoch(session=session, run_id=run_id, fold=output.fold, **epoch)


def train_fold(
    config: FoldwiseConfig, run_id: int, fold_set_id: int, fold: int, warm_from: int | None = None
) -> FoldOutput:
    """Train fold `fold` of the run, from scratch (or pretrained weights), or from run `warm_from`'s;
    or reuse it, when an earlier run that did not finish trained it on the same inputs.

    The fold's files are written whole, then its row (with any epoch row that could not be written
    on the way) in one transaction: a later run finds it there if this one dies."""
    started = time.perf_counter()
    url = config.resolved_database_url()
    log = get_logger(__name__)
    with session_scope(url) as session:
        fold_set = fold_store.load_fold_set(session=session, fold_set_id=fold_set_id)
    fingerprint = fold_fingerprint(config, fold_set, fold, warm_from)
    reused = reuse_fold(config, run_id, fold, fingerprint)
    if reused is not None:
        return reused

    device = choose_device(config.train.device)
    frame, vocab = load_fold_frame(config, fold_set)
    trainable = frame[frame["fold"] != HOLDOUT].reset_index(drop=True)
    holdout = frame[frame["fold"] == HOLDOUT].reset_index(drop=True)
    valid_index = trainable.index[trainable["fold"] == fold].tolist()
    n_train = len(trainable) - len(valid_index)
    if n_train < config.train.batch_size:
        log.warning(
            "fold %d has %d training samples, fewer than train.batch_size %d: batches of %d",
            fold,
            n_train,
            config.train.batch_size,
            fitting_batch_size(config.train.batch_size, n_train),
        )
    unwritten_epochs: list[dict[str, Any]] = []

    def record_epoch(**values):
        try:
            with session_scope(url) as session:
                training_store.add_epoch(session=session, run_id=run_id, fold=fold, **values)
        except SQLAlchemyError as error:  # the curve is not worth the fold: it goes with the fold's row
            log.warning(
                "epoch row of fold %d not written (%s): it will be written with the fold", fold, error
            )
            unwritten_epochs.append(values)

    seed = config.folds.seed + fold
    set_seed(seed, reproducible=True)  # same inputs and seed: same weights on CPU
    learn = None
    folder = run_folder(config, run_id, create=True)
    weights_path = folder / f"fold{fold}.safetensors"
    predictions_path = folder / f"fold{fold}_predictions.npz"
    try:
        with fastai_random(seed):
            champion = load_model(config, warm_from) if warm_from is not None else None
            learn = fit_stages(trainable, valid_index, vocab, config, device, record_epoch, fold, champion)
        state = {
            name: tensor.detach().contiguous().cpu() for name, tensor in learn.model.state_dict().items()
        }
        with atomic_file(weights_path) as partial:
            save_file(state, str(partial))
        valid = trainable.iloc[valid_index]
        with atomic_file(predictions_path) as partial, partial.open("wb") as handle:
            np.savez(
                handle,
                vocab=np.array(vocab),
                oof_ids=valid["sample_id"].to_numpy(),
                oof=predict(learn, valid),
                holdout_ids=holdout["sample_id"].to_numpy(),
                holdout=predict(learn, holdout),
            )
    finally:
        # Free GPU memory before the next fold takes it.
        del learn
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    output = FoldOutput(
        fold,
        weights_path,
        predictions_path,
        len(trainable) - len(valid_index),
        len(valid_index),
        time.perf_counter() - started,
    )
    write_with_retries(
        url, lambda session: record_fold(session, run_id, output, fingerprint, unwritten_epochs)
    )
    return output
