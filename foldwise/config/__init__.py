"""The one configuration model of Foldwise.

A TOML file, `--set section.key=value` overrides, the Prefect flow parameter and the DB record of a
run are all this model. Relative paths in a config file are relative to that file's folder.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_serializer, model_validator

from foldwise import secrets
from foldwise.config.architectures import resolve_arch, torchvision_classifiers, unknown_arch
from foldwise.config.base import ConfigError, Section
from foldwise.config.data import DataConfig, FoldsConfig, SourceConfig
from foldwise.config.service import (
    ALERT_EVENTS,
    AlertConfig,
    AlertEvent,
    RayConfig,
    RetentionConfig,
    ServiceConfig,
)
from foldwise.config.training import (
    AugmentConfig,
    GateConfig,
    ModelConfig,
    StageConfig,
    ThresholdConfig,
    TrainConfig,
)

__all__ = [
    "ALERT_EVENTS",
    "DATABASE_URL_ENV",
    "AlertConfig",
    "AlertEvent",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "FoldsConfig",
    "FoldwiseConfig",
    "GateConfig",
    "ModelConfig",
    "RayConfig",
    "RetentionConfig",
    "Section",
    "ServiceConfig",
    "SourceConfig",
    "StageConfig",
    "ThresholdConfig",
    "TrainConfig",
    "check_image_folder",
    "load_config",
    "resolve_arch",
    "torchvision_classifiers",
    "unknown_arch",
]

DATABASE_URL_ENV = "FOLDWISE_DATABASE_URL"


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
