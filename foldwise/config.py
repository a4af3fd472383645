"""The one configuration model of Foldwise.

A TOML file, `--set section.key=value` overrides, the Prefect flow parameter and the DB record of a
run are all this model. Relative paths in a config file are relative to that file's folder.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from foldwise import secrets
from foldwise.errors import FoldwiseError

DATABASE_URL_ENV = "FOLDWISE_DATABASE_URL"
# How torchvision's source registers a classification model: the decorator, maybe others, the builder.
REGISTERED_MODEL = re.compile(r"^@register_model\(\)\n(?:@.*\n)*def (\w+)\(", re.MULTILINE)


class ConfigError(FoldwiseError, ValueError):
    """A configuration that cannot be used; the message says what to change."""


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(Section):
    """Where labeled batches arrive: a local folder, a Kaggle competition or dataset, or an fsspec URL."""

    kind: Literal["local", "kaggle", "url"] = Field(
        "local",
        description="local: a folder that receives label files and images; kaggle: a competition or "
        "dataset (pip install 'foldwise[kaggle]'); url: a folder or an archive at an fsspec URL.",
    )
    path: Path | None = Field(
        None,
        description="Folder that holds the label files and images: the data itself (local), or where "
        "downloads are extracted (kaggle, url; default: data_home/source).",
    )
    competition: str | None = Field(
        None, description="kaggle: a competition, e.g. 'planet-understanding-the-amazon-from-space'."
    )
    files: list[str] | None = Field(None, description="kaggle competition: only these files (default: all).")
    dataset: str | None = Field(
        None, description="kaggle: a dataset 'owner/slug', e.g. 'nikitarom/planets-dataset'."
    )
    url: str | None = Field(
        None,
        description="url: a folder or an archive at any fsspec URL (file://, https://, s3://, gs://); "
        "a credential in it as ${env:NAME} or ${secret:NAME}.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="url: fsspec options (e.g. key/secret for s3), credentials as ${env:NAME} or ${secret:NAME}.",
    )
    retries: int = Field(3, ge=0, description="Retries of a data pull that failed transiently.")
    retry_delay_seconds: float = Field(
        10.0, ge=0, description="First retry delay; doubles with each retry (with jitter)."
    )
    max_extract_gib: float = Field(
        200.0,
        gt=0,
        description="A download may not unpack to more than this many GiB, nested archives included.",
    )
    max_compression_ratio: float = Field(
        200.0,
        gt=1,
        description="An archive may not unpack to more than this many times its own size (zip bombs).",
    )
    max_archive_members: int = Field(
        2_000_000, ge=1, description="A download may not hold more entries, nested archives included."
    )

    @field_serializer("url")
    def _masked_url(self, url: str | None) -> str | None:
        return secrets.mask(url) if url else url

    @field_serializer("storage_options")
    def _masked_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return secrets.mask_options(options)

    def resolved_url(self) -> str:
        return secrets.resolve(self.url or "")

    def resolved_storage_options(self) -> dict[str, Any]:
        return secrets.resolve_options(self.storage_options)

    @model_validator(mode="after")
    def _what_the_kind_needs(self) -> SourceConfig:
        if self.kind == "local" and self.path is None:
            raise ValueError("source.path is required for a local source")
        if self.kind == "kaggle" and (self.competition is None) == (self.dataset is None):
            raise ValueError("a kaggle source needs source.competition or source.dataset (one of them)")
        if self.kind == "kaggle" and self.dataset and self.dataset.count("/") != 1:
            raise ValueError(f"source.dataset must be 'owner/slug', not {self.dataset!r}")
        if self.files and not self.competition:
            raise ValueError("source.files selects files of a kaggle competition; set source.competition")
        if self.kind == "url" and not self.url:
            raise ValueError("a url source needs source.url")
        return self


class DataConfig(Section):
    """How to read the label files: enough to load Planet, HPA and PASCAL by configuration alone."""

    label_files: str = Field("*.csv", description="Glob, relative to the source folder, of the label CSVs.")
    id_column: str = Field("image_name", description="Column with the image id.")
    label_column: str = Field("tags", description="Column with the labels.")
    label_delimiter: str = Field(" ", description="Separator between labels in one cell.")
    image_dir: str = Field("train-jpg", description="Image folder, relative to the source folder.")
    image_suffix: str = Field(".jpg", description="Appended to the id to name the file ('' if ids have one).")
    fixed_split_column: str | None = Field(
        None,
        description="Boolean column marking a fixed gate set (PASCAL's `is_valid`), never trained on; "
        "unset: the gate set is gate.fraction of the samples.",
    )
    label_names: dict[str, str] | None = Field(
        None, description="Optional map from label ids in the file (e.g. HPA's numbers) to names."
    )
    vocabulary: list[str] | None = Field(
        None, description="Fixed label vocabulary; rows with other labels are rejected. None: grows."
    )
    allow_empty_labels: bool = Field(False, description="Accept rows without any label.")
    on_removed: Literal["retire", "keep"] = Field(
        "retire",
        description="A sample absent from every label file is retired (leaves the folds), or kept.",
    )
    on_conflict: Literal["latest", "first", "reject"] = Field(
        "latest",
        description="Rows that give one id different labels: the latest row wins (files by time, then "
        "name; rows in order), the first one wins, or the id is rejected.",
    )
    max_image_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Larger images are quarantined unread (decompression bombs); Pillow itself refuses "
        "images over 178,956,970 pixels whatever this says.",
    )

    @field_validator("label_delimiter")
    @classmethod
    def _delimiter_not_empty(cls, value: str) -> str:
        if value == "":
            raise ValueError("must not be empty")
        return value


class FoldsConfig(Section):
    """Multi-label stratified K-fold split (iterative stratification)."""

    n_folds: int = Field(
        5, ge=2, le=20, description="Number of folds: each trains one model of the ensemble."
    )
    seed: int = Field(42, description="Seed of the fold split and the gate set; fold k trains with seed + k.")
    strategy: Literal["extend", "rebuild"] = Field(
        "extend",
        description="'extend' keeps earlier samples in their folds and stratifies only new ones; "
        "'rebuild' re-splits everything (the notebooks' way).",
    )


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


@functools.cache
def torchvision_classifiers() -> frozenset[str]:
    """The classification models torchvision registers, read from its source files: importing it
    (and so torch) takes seconds (4.9 s measured, against 11 ms for this), and every command and
    every model record loads a config. If its source ever stops matching, it is imported after all."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(spec.submodule_search_locations[0]) / "models"
    names = frozenset(
        name for path in folder.glob("*.py") for name in REGISTERED_MODEL.findall(path.read_text())
    )
    if names:
        return names
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def unknown_arch(name: str) -> str | None:
    """Why `name` is no architecture Foldwise can build (a torchvision classifier or a timm model), or
    None. timm is imported (with torch) only for a name torchvision does not have."""
    torchvision_names = torchvision_classifiers()
    if name in torchvision_names:
        return None
    close = difflib.get_close_matches(name, torchvision_names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "e.g. resnet18, resnet50, convnext_tiny"
    if importlib.util.find_spec("timm") is None:
        return (
            f"{name!r} is not a torchvision classification model ({hint}), and timm, for timm's models, "
            "is not installed"
        )
    import timm

    if name in timm.list_models():
        return None
    return f"{name!r} is neither a torchvision classification model ({hint}) nor a timm model"


def resolve_arch(name: str):
    """What fastai builds for `name`: torchvision's model function, else the timm model's name (fastai
    builds timm models by name). `unknown_arch` is the one rule for which names exist."""
    problem = unknown_arch(name)
    if problem:
        raise ConfigError(f"model.arch: {problem}")
    if name not in torchvision_classifiers():
        return name
    import torchvision

    return getattr(torchvision.models, name)


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


class ServiceConfig(Section):
    """How `foldwise serve` schedules runs, and what a run does while another one trains."""

    cron: str | None = Field(None, description="Cron schedule, e.g. '0 3 * * *'; unset: no cron.")
    interval_minutes: float | None = Field(None, gt=0, description="Or: run every this many minutes.")
    timezone: str = Field("UTC", description="IANA time zone of the cron schedule.")
    when_busy: Literal["wait", "skip"] = Field(
        "wait", description="A run that finds another one training waits for it, or is recorded as skipped."
    )
    wait_timeout_minutes: float = Field(
        360.0, gt=0, description="A waiting run gives up (skipped) after this."
    )
    stale_after_minutes: float = Field(
        10.0,
        gt=0,
        description="A run (or the holder of the training lock) whose heartbeat is this old is taken as "
        "crashed; on the same host a holder whose process is gone is taken at once.",
    )
    run_timeout_minutes: float | None = Field(
        None, gt=0, description="A run that lasts longer fails (the lock is freed); unset: none."
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where folds train: one after another in the run's process (local), or at the same "
        "time on a Ray cluster (ray: see the ray section; pip install 'foldwise[ray]').",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> ServiceConfig:
        if self.cron and self.interval_minutes:
            raise ValueError("set service.cron or service.interval_minutes, not both")
        return self


class RayConfig(Section):
    """Folds on a Ray cluster (`service.executor = "ray"`): each fold is a Prefect task that reserves
    these resources, so Ray runs as many at once as the cluster has room for."""

    address: str | None = Field(
        None,
        description="A running cluster to join: 'auto' (RAY_ADDRESS's, or the one this node belongs to), "
        "'host:6379', or 'ray://host:10001' (Ray Client); unset: each run starts a local cluster of its own, "
        "sized for this machine.",
    )
    num_cpus: float = Field(
        1.0, gt=0, description="CPUs each fold reserves; Ray sets its torch threads to match."
    )
    num_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs each fold reserves; a fraction packs folds onto one GPU (0.5: two at a time). "
        "Unset: 1 when the cluster has GPUs and train.device is not cpu, else 0.",
    )

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and not value.is_integer():
            raise ValueError("a fold may reserve a fraction of one GPU, or whole GPUs (Ray's rule)")
        return value


AlertEvent = Literal["failed", "rejected", "promoted", "gate-failed", "prequential-drop"]
ALERT_EVENTS = get_args(AlertEvent)


class AlertConfig(Section):
    """Notifications at the end of a run: through Apprise URLs (Slack, email, webhooks...) or Prefect
    notification blocks. An alert that cannot be sent is a warning in the log, never a failed run."""

    apprise_urls: list[str] = Field(
        default_factory=list,
        description="Apprise URLs, each named as ${env:NAME} or ${secret:NAME} (never written here: an "
        "Apprise URL carries its credentials, e.g. slack://TokenA/TokenB/TokenC).",
    )
    prefect_blocks: list[str] = Field(
        default_factory=list,
        description="Prefect notification blocks as 'block-type/name', e.g. 'slack-webhook/ops' (saved on "
        "the Prefect server the runs use).",
    )
    on: list[AlertEvent] = Field(
        default_factory=lambda: list(ALERT_EVENTS),
        description="What alerts: a failed or crashed run, a candidate the gate rejected, a promotion, a "
        "gate that failed, a drop whose prequential score fell (see prequential_drop).",
    )
    prequential_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="A drop the champion scores worse than its own OOF score by more than this alerts.",
    )

    @field_validator("apprise_urls")
    @classmethod
    def _named_not_written(cls, urls: list[str]) -> list[str]:
        written = [index for index, url in enumerate(urls) if not secrets.is_reference(url)]
        if written:
            raise ValueError(
                f"entries {written} hold an Apprise URL itself; name each as ${{env:NAME}} or ${{secret:NAME}} "
                "(an Apprise URL carries its credentials, and the config is stored with every run)"
            )
        return urls

    @field_validator("prefect_blocks")
    @classmethod
    def _block_type_and_name(cls, names: list[str]) -> list[str]:
        wrong = [name for name in names if name.count("/") != 1 or name.startswith("/") or name.endswith("/")]
        if wrong:
            raise ValueError(f"{wrong}: name each block 'block-type/name', e.g. 'slack-webhook/ops'")
        return names


class RetentionConfig(Section):
    """Which runs keep their files (weights, predictions): `foldwise gc`, or after each run."""

    keep_last: int = Field(
        3,
        ge=0,
        description="The newest successful runs keep their files, besides the champion, the run a "
        "rollback returns to, pinned runs and runs not gated yet.",
    )
    after_each_run: bool = Field(
        False, description="Remove what retention does not keep at the end of each successful run."
    )


class FoldwiseConfig(Section):
    """Everything a Foldwise run needs."""

    name: str = Field("foldwise", description="A name for this project, shown in the dashboard.")
    data_home: Path = Field(Path("~/.foldwise"), description="Images received, caches, model weights.")
    database_url: str | None = Field(
        None,
        description=f"SQLAlchemy URL; default sqlite under data_home; env {DATABASE_URL_ENV} wins. A password "
        "in it as ${env:NAME} or ${secret:NAME}.",
    )
    source: SourceConfig
    data: DataConfig = Field(default_factory=DataConfig)
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    thresholds: ThresholdConfig = Field(default_factory=ThresholdConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @model_validator(mode="after")
    def _vocabulary_matches_names(self) -> FoldwiseConfig:
        names, vocab = self.data.label_names, self.data.vocabulary
        if names and vocab and not set(names.values()) <= set(vocab):
            missing = sorted(set(names.values()) - set(vocab))
            raise ValueError(f"data.label_names maps to names outside data.vocabulary: {missing}")
        return self

    @model_validator(mode="after")
    def _ray_gives_each_fold_its_gpus(self) -> FoldwiseConfig:
        device = self.train.device
        if self.service.executor == "ray" and device.startswith("cuda:") and device != "cuda:0":
            raise ValueError(
                f"train.device = {device!r}: on Ray a fold sees only the GPUs Ray gives it; set "
                "train.device to auto or cuda, and the GPUs per fold with ray.num_gpus"
            )
        return self

    @field_serializer("database_url")
    def _masked_database_url(self, url: str | None) -> str | None:
        return secrets.mask(url) if url else url

    def resolved_database_url(self) -> str:
        url = os.environ.get(DATABASE_URL_ENV) or self.database_url
        if url:
            return secrets.resolve(url)
        return f"sqlite:///{self.data_home.expanduser() / 'foldwise.db'}"

    def literal_credentials(self) -> list[str]:
        """The settings that hold a credential themselves instead of naming it."""
        found = [
            name
            for name, value in (("database_url", self.database_url), ("source.url", self.source.url))
            if secrets.literal_credentials(value)
        ]
        if secrets.mask_options(self.source.storage_options) != self.source.storage_options:
            found.append("source.storage_options")
        return found

    @model_validator(mode="after")
    def _downloads_land_in_the_data_home(self) -> FoldwiseConfig:
        if self.source.path is None:
            self.source.path = self.data_home / "source"
        return self

    def image_folder(self) -> Path:
        return self.source.path / self.data.image_dir


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `section.key=value`; the value is read as TOML (numbers, booleans, lists), else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def _resolve_paths(config: FoldwiseConfig, base: Path) -> FoldwiseConfig:
    def resolve(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else (base / path).resolve()

    config.data_home = resolve(config.data_home)
    config.source.path = resolve(config.source.path)
    url = config.database_url
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        config.database_url = f"sqlite:///{resolve(Path(url.removeprefix('sqlite:///')))}"
    return config


def format_validation_error(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def build_config(raw: dict[str, Any], base: Path, origin: str) -> FoldwiseConfig:
    try:
        config = FoldwiseConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, origin)) from None
    return _resolve_paths(config, base)


def load_config(path: Path | str, overrides: list[str] | None = None) -> FoldwiseConfig:
    """The configuration from a TOML file, with `--set section.key=value` overrides applied; relative
    paths in it are resolved against the file's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    raw = apply_overrides(raw, overrides or [])
    return build_config(raw, path.resolve().parent, str(path))


def check_image_folder(config: FoldwiseConfig) -> None:
    """The image folder must exist before data can be pulled; said here, where the fact is known."""
    folder = config.image_folder()
    if not folder.is_dir():
        raise ConfigError(
            f"image folder {folder} does not exist; set source.path and data.image_dir "
            f"(currently {config.source.path} and {config.data.image_dir!r})"
        )
