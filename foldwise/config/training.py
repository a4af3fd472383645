"""What each fold trains and how (`[model]`, `[train]` and its stages, `[augment]`), how thresholds are
fitted (`[thresholds]`) and how the champion gate decides (`[gate]`)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from foldwise.config.architectures import unknown_arch
from foldwise.config.base import Section


class StageConfig(Section):
    """One progressive-resizing stage; stage k+1 starts from stage k's weights."""

    size: int = Field(ge=8, description="Image size of this stage.")
    epochs: int = Field(ge=1, description="Epochs of this stage (one fit_one_cycle).")
    lr: float | None = Field(None, gt=0, description="Peak learning rate; unset: lr_find's suggestion.")
    frozen: bool = Field(False, description="Train only the head (pretrained body frozen).")


class AugmentConfig(Section):
    """Presizing and batch augmentation (fastai's aug_transforms)."""

    presize: float = Field(1.25, ge=1.0, description="Items are resized to stage size x this, then cropped.")
    flip: bool = Field(True, description="Random horizontal flips.")
    flip_vert: bool = Field(
        True, description="Vertical flips too: right for satellite and microscopy images."
    )
    max_rotate: float = Field(10.0, ge=0, description="Largest random rotation, in degrees.")
    max_lighting: float = Field(
        0.2, ge=0, le=1, description="Largest random change of brightness and contrast."
    )
    max_warp: float = Field(0.0, ge=0, le=1, description="0: no warp, as the Planet notebook.")
    min_scale: float = Field(
        0.75, gt=0, le=1, description="Smallest share of the item's area a random crop keeps."
    )


class ModelConfig(Section):
    """The network each fold trains."""

    arch: str = Field("resnet34", description="A torchvision classification model, or a timm model's name.")
    pretrained: bool = Field(
        True,
        description="Start from the architecture's pretrained weights (downloaded once); false: from scratch.",
    )
    head: Literal["auto", "fastai", "linear"] = Field(
        "auto",
        description="fastai: fastai's head (average and max pooling, two linear layers with dropout), made "
        "to fine-tune a pretrained body; linear: average pooling and one linear layer, the network's own "
        "classifier, for a body trained from scratch. auto: fastai when pretrained, else linear.",
    )

    def resolved_head(self) -> str:
        if self.head != "auto":
            return self.head
        return "fastai" if self.pretrained else "linear"

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, name: str) -> str:
        problem = unknown_arch(name)
        if problem:
            raise ValueError(problem)
        return name


class TrainConfig(Section):
    """fastai training: progressive-resizing stages, batch size, device and precision."""

    stages: list[StageConfig] = Field(
        default_factory=lambda: [
            StageConfig(size=128, epochs=5, frozen=True),
            StageConfig(size=256, epochs=5, frozen=False),
        ],
        min_length=1,
        description="Progressive resizing: each stage trains at its image size, starting from the weights "
        "the stage before left.",
    )
    batch_size: int = Field(
        64, ge=1, description="Images per training batch (a smaller fold trains on smaller ones)."
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto (CUDA when there is one), cpu, cuda or cuda:N.",
    )
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto",
        description="bf16 autocast (fp16 + loss scaling where a GPU lacks bf16). auto: on CUDA and on a CPU "
        "with bf16 instructions (AVX512-BF16 or AMX; elsewhere bf16 is emulated and slower); on: always.",
    )
    channels_last: bool = Field(True, description="channels_last memory format (faster convolutions).")
    compile: bool = Field(False, description="torch.compile the model (slow to start, faster on long runs).")
    deterministic: bool = Field(
        False,
        description="Deterministic cuDNN kernels (else cudnn.benchmark picks the fastest); CPU runs are.",
    )
    num_workers: int | Literal["auto"] = Field(
        "auto",
        description="Threads gathering the next batches while the model computes; auto: 2 on CUDA, 0 on CPU.",
    )
    mixup: bool = Field(False, description="MixUp between images of a batch.")
    loss: Literal["bce", "focal", "asymmetric"] = Field(
        "bce", description="bce (binary cross-entropy), or focal / asymmetric: weigh rare positives up."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Targets pulled this much towards 0.5.")
    weight_decay: float | None = Field(
        None, ge=0, description="Decoupled weight decay; unset: fastai's (0.01)."
    )
    rare_label_sampling: bool = Field(
        True,
        description="Draw training images with labels rarer than others more often (with replacement); "
        "false: every image once an epoch.",
    )
    early_stopping_patience: int | None = Field(None, ge=1, description="Epochs without a better valid_loss.")
    fold_timeout_minutes: float | None = Field(
        None, gt=0, description="A fold that trains longer fails the run (the lock is freed); unset: none."
    )
    warm_start: bool = Field(
        False, description="Start each fold from the champion's weights (same arch); new labels start fresh."
    )
    warm_start_stages: list[StageConfig] | None = Field(
        None, description="Stages of a warm-started run (usually fewer epochs); unset: `stages`."
    )


class ThresholdConfig(Section):
    """The metric users are scored on, and the decision thresholds that maximise it on out-of-fold
    predictions."""

    metric: Literal["fbeta_samples", "fbeta_macro", "fbeta_micro"] = Field(
        "fbeta_samples",
        description="F-beta averaged over samples (Planet's F2), over classes (with beta 1: the protein "
        "atlas's macro F1) or over all decisions pooled (micro).",
    )
    beta: float = Field(2.0, gt=0, description="The beta of the F-beta metric; 2 is the Planet metric.")
    min_positives: int = Field(
        5, ge=1, description="Classes with fewer OOF positives keep the global threshold."
    )


class GateConfig(Section):
    """The champion gate: a candidate replaces the champion only if it is not worse on the gate set."""

    fraction: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="Without data.fixed_split_column: this fraction of samples (stratified, chosen once "
        "and kept as data grows) forms the gate set, never trained on. 0: no gate set.",
    )
    tolerance: float = Field(
        0.0, ge=0, description="The candidate's gate F-beta may be this much below the champion's."
    )
    max_class_drop: float = Field(
        0.05, ge=0, description="No class with enough gate support may lose more F-beta than this."
    )
    min_support: int = Field(10, ge=1, description="Gate positives a class needs for the per-class guard.")
