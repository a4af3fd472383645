"""Train one fold of the ensemble with fastai: stages of growing image size (progressive resizing).

`train_fold` needs only its inputs (config, run id, fold set id, fold number) and writes its outputs
under the data home (weights, out-of-fold and gate set probabilities), so that it can run in another
process or host that shares the data home and the database. What a fold sees, its fingerprint, reuse
and records: tasks/fold_records.py.
"""

from __future__ import annotations

import gc
import os
import random
import time
from contextlib import contextmanager
from typing import Any

import fastai.data.load
import fastai.vision.augment
import numpy as np
import sklearn.metrics
import torch
from fastai.callback import fp16, schedule  # noqa: F401  (they add fit_one_cycle, lr_find, to_bf16 to Learner)
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.core import Callback
from fastai.callback.mixup import MixUp
from fastai.callback.progress import ProgressCallback
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.metrics import accuracy_multi, skm_to_fastai
from fastai.torch_core import set_seed
from fastai.vision.learner import vision_learner
from fastcore.basics import noop
from sqlalchemy.exc import SQLAlchemyError

from foldwise.config import ConfigError, FoldwiseConfig, StageConfig, ThresholdConfig, resolve_arch
from foldwise.db import folds as fold_store
from foldwise.db import training as training_store
from foldwise.db.folds import GATE_SET
from foldwise.db.models import utcnow
from foldwise.db.session import session_scope, write_with_retries
from foldwise.errors import FoldwiseError
from foldwise.files import atomic_file
from foldwise.metrics import AVERAGES
from foldwise.stages import trained_stages
from foldwise.tasks.batches import CachedBatches, rarity_weights
from foldwise.tasks.ensemble import (
    EnsembleModel,
    load_model,
    load_weights,
    run_folder,
    save_weights,
    warm_state,
)
from foldwise.tasks.fold_records import (
    FoldImages,
    FoldOutput,
    fold_fingerprint,
    load_fold_images,
    record_fold,
    reuse_fold,
)
from foldwise.tasks.logs import get_logger
from foldwise.tasks.losses import MultiLabelLoss
from foldwise.tasks.runs import phase


class PretrainedWeightsUnavailable(FoldwiseError, RuntimeError):
    """Pretrained weights were asked for and cannot be had (offline, no cache)."""


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
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {setting!r} but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"train.device = {setting!r} but there are {torch.cuda.device_count()} CUDA devices"
        )
    return device


def stage_loaders(
    images: FoldImages, valid: np.ndarray, size: int, config: FoldwiseConfig, device: torch.device, seed: int
) -> DataLoaders:
    """Training and validation batches of one stage: the cached items of its size, augmented on the
    device (presizing: items are larger than the stage size; crops and flips come on the batch)."""
    pixels, rows = images.at(size, config)
    train = CachedBatches(
        pixels,
        rows[~valid],
        images.targets[~valid],
        size,
        config,
        device,
        shuffle=True,
        augment=True,
        seed=seed,
        weights=rarity_weights(images.targets[~valid]) if config.train.rare_label_sampling else None,
    )
    check = CachedBatches(pixels, rows[valid], images.targets[valid], size, config, device, shuffle=False)
    return DataLoaders(train, check, device=device)


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


class CpuAutocast(Callback):
    """bf16 autocast on a CPU (fastai's MixedPrecision is CUDA's): faster where the CPU has bf16
    instructions, and no loss scaling is needed for bf16."""

    order = 10

    def before_batch(self):
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        self.autocast.__enter__()

    def after_pred(self):
        self.learn.pred = self.pred.float()

    def after_loss(self):
        self.autocast.__exit__(None, None, None)


def cpu_has_bf16() -> bool:
    """bf16 instructions (AVX512-BF16 or AMX): with them bf16 autocast speeds a CPU up; without them
    bf16 is emulated and several times slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def use_mixed_precision(setting: str, device: torch.device) -> bool:
    """'auto': on CUDA, and on a CPU with bf16 instructions."""
    if setting != "auto":
        return setting == "on"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


# vision_learner's head settings. fastai's own (concat pooling, a hidden layer, dropout) suits a pretrained
# body; from scratch, a network learns far more through its own head (benchmarks/bench_quality.py).
HEADS = {
    "fastai": {},
    "linear": {"concat_pool": False, "lin_ftrs": [], "ps": 0.0, "first_bn": False},
}


def training_metric(settings: ThresholdConfig):
    """The configured metric in each epoch's log, at the 0.5 threshold (thresholds are chosen after
    training): fastai's FBetaMulti, with an undefined score 0 as in foldwise.metrics, not a warning."""
    return skm_to_fastai(
        sklearn.metrics.fbeta_score,
        thresh=0.5,
        flatten=False,
        beta=settings.beta,
        average=AVERAGES[settings.metric],
        zero_division=0,
    )


def build_learner(dls: DataLoaders, n_out: int, config: FoldwiseConfig, device: torch.device) -> Learner:
    arch = resolve_arch(config.model.arch)
    metrics = [accuracy_multi, training_metric(config.thresholds)]
    try:
        learn = vision_learner(
            dls,
            arch,
            n_out=n_out,
            pretrained=config.model.pretrained,
            normalize=False,  # the batches are normalised already (tasks/batches.py)
            loss_func=MultiLabelLoss(config.train.loss, config.train.label_smoothing),
            metrics=metrics,
            wd=config.train.weight_decay,
            **HEADS[config.model.resolved_head()],
        )
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
    if use_mixed_precision(config.train.mixed_precision, device):
        if device.type == "cuda":
            learn.to_bf16() if torch.cuda.is_bf16_supported() else learn.to_fp16()
        else:
            learn.add_cb(CpuAutocast())
    if config.train.channels_last:
        learn.add_cb(ChannelsLast())
    if config.train.compile:
        learn.model = torch.compile(learn.model)
    return learn


def plain_model(learn: Learner) -> torch.nn.Module:
    """The model itself, not its torch.compile wrapper: its state dict has the plain names."""
    return getattr(learn.model, "_orig_mod", learn.model)


def fit_stage(learn: Learner, stage: StageConfig, config: FoldwiseConfig) -> float:
    """Train one stage; returns the peak learning rate used. lr_find, when the stage has no lr, runs
    on the model as the stage trains it (head only, or whole)."""
    pretrained = config.model.pretrained
    frozen = stage.frozen and pretrained
    learn.freeze() if frozen else learn.unfreeze()
    lr = stage.lr if stage.lr is not None else float(learn.lr_find(show_plot=False).valley)
    patience = config.train.early_stopping_patience
    callbacks = [EarlyStoppingCallback(monitor="valid_loss", patience=patience)] if patience else []
    # Discriminative rates when the pretrained body trains too: its early layers move least.
    rates = slice(lr / 100, lr) if pretrained and not frozen else lr
    learn.fit_one_cycle(stage.epochs, rates, cbs=callbacks)
    return lr


def predict(learn: Learner, loader: CachedBatches, n_out: int) -> np.ndarray:
    if len(loader.rows) == 0:
        return np.zeros((0, n_out), dtype=np.float32)
    probabilities, _ = learn.get_preds(dl=loader)
    return probabilities.float().numpy()


def prediction_batches(
    images: FoldImages, size: int, config: FoldwiseConfig, device: torch.device
) -> CachedBatches:
    pixels, rows = images.at(size, config)
    return CachedBatches(pixels, rows, images.targets, size, config, device, shuffle=False)


def fit_stages(
    images: FoldImages,
    valid: np.ndarray,
    config: FoldwiseConfig,
    device: torch.device,
    record_epoch,
    fold: int,
    stages: list[StageConfig],
    warm_from: EnsembleModel | None = None,
) -> Learner:
    """Progressive resizing: each stage continues from the previous stage's weights at its own size.
    Warm-started, the first stage begins from the champion's weights for this fold."""
    learn = None
    for stage_number, stage in enumerate(stages):
        dls = stage_loaders(images, valid, stage.size, config, device, seed=config.folds.seed + fold)
        if learn is None:
            learn = build_learner(dls, len(images.vocab), config, device)
            if warm_from is not None:
                source = load_weights(warm_from.fold_paths[fold])  # same folds: see warm_start_source
                model = plain_model(learn)
                model.load_state_dict(warm_state(model.state_dict(), source, warm_from.vocab, images.vocab))
        else:
            learn.dls = dls

        def record(epoch, values, seconds, stage_number=stage_number, size=stage.size):
            record_epoch(stage=stage_number, size=size, epoch=epoch, values=values, seconds=seconds)

        describe = f"fold {fold} stage {stage_number + 1}/{len(stages)} ({stage.size}px)"
        with learn.added_cbs(RecordEpochs(record, describe)):
            fit_stage(learn, stage, config)
    return learn


def train_fold(
    config: FoldwiseConfig, run_id: int, fold_set_id: int, fold: int, warm_from: int | None = None
) -> FoldOutput:
    """Train fold `fold` of the run, from scratch (or pretrained weights), or from run `warm_from`'s;
    or reuse it, when an earlier run that did not finish trained it on the same inputs.

    The fold's files are written whole, then its row (with any epoch row that could not be written
    on the way) in one transaction: a later run finds it there if this one dies."""
    started, started_at = time.perf_counter(), utcnow()
    url = config.resolved_database_url()
    log = get_logger(__name__)
    with session_scope(url) as session:
        fold_set = fold_store.load_fold_set(session=session, fold_set_id=fold_set_id)
    fingerprint = fold_fingerprint(config, fold_set, fold, warm_from)
    reused = reuse_fold(config, run_id, fold, fingerprint)
    if reused is not None:
        return reused

    device = choose_device(config.train.device)
    images = load_fold_images(config, fold_set)
    trainable = images.subset((images.frame["fold"] != GATE_SET).to_numpy())
    gate_set = images.subset((images.frame["fold"] == GATE_SET).to_numpy())
    valid = (trainable.frame["fold"] == fold).to_numpy()
    n_train = int((~valid).sum())
    if n_train < config.train.batch_size:
        log.warning(
            "fold %d has %d training samples, fewer than train.batch_size %d: batches of %d",
            fold,
            n_train,
            config.train.batch_size,
            max(1, n_train),
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

    stages = trained_stages(config.train.stages, config.train.warm_start_stages, warm_from is not None)
    seed = config.folds.seed + fold
    # Same inputs and seed: same weights on a CPU in fp32.
    set_seed(seed, reproducible=config.train.deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.train.deterministic
    learn = None
    folder = run_folder(config, run_id, create=True)
    weights_path = folder / f"fold{fold}.safetensors"
    predictions_path = folder / f"fold{fold}_predictions.npz"
    try:
        with fastai_random(seed), phase(config, run_id, f"fold {fold} training"):
            champion = load_model(config, warm_from) if warm_from is not None else None
            learn = fit_stages(trainable, valid, config, device, record_epoch, fold, stages, champion)
        state = {
            name: tensor.detach().contiguous().cpu()
            for name, tensor in plain_model(learn).state_dict().items()
        }
        with atomic_file(weights_path) as partial:
            save_weights(state, partial)
        # One pass over each set: its validation fold (out of fold) and the gate set.
        size = stages[-1].size
        oof, gate = trainable.subset(valid), gate_set
        loaders = [prediction_batches(part, size, config, device) for part in (oof, gate)]
        with phase(config, run_id, f"fold {fold} prediction"):
            oof_probabilities, gate_probabilities = (
                predict(learn, loader, len(images.vocab)) for loader in loaders
            )
        with atomic_file(predictions_path) as partial, partial.open("wb") as handle:
            np.savez(
                handle,
                vocab=np.array(images.vocab),
                oof_ids=oof.frame["sample_id"].to_numpy(),
                oof=oof_probabilities,
                gate_set_ids=gate.frame["sample_id"].to_numpy(),
                gate_set=gate_probabilities,
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
        n_train,
        int(valid.sum()),
        time.perf_counter() - started,
        started_at,
        utcnow(),
    )
    write_with_retries(
        url, lambda session: record_fold(session, run_id, output, fingerprint, unwritten_epochs)
    )
    return output
