"""Where labeled images arrive and how they are read (`[source]`, `[data]`), and how folds are made
(`[folds]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from foldwise import secrets
from foldwise.config.base import Section


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
    settle_seconds: float = Field(
        5.0,
        ge=0,
        description="A file of a local source changed more recently than this may still be being "
        "written: a label file is read once it has stayed unchanged this long (a pull waits for that "
        "once, else leaves it to the next pull); an image that cannot be decoded yet waits instead of "
        "being quarantined. Downloads are moved in whole: they never wait.",
    )
    max_aspect_ratio: float = Field(
        10.0,
        ge=1,
        description="Images whose long side is more than this many times their short side are named "
        "in the pull's warnings: the centred square a model sees keeps little of them.",
    )
    near_duplicates: bool = Field(
        True,
        description="Group images that are nearly the same (re-encoded, resized, slightly edited) by "
        "a perceptual hash, computed once per image when a pull decodes it; a group shares one fold "
        "and is wholly in or out of the gate set. Exact copies (one content hash) are grouped always; "
        "off skips the perceptual hash.",
    )
    near_duplicate_distance: int = Field(
        4,
        ge=0,
        le=16,
        description="Images whose 64-bit perceptual hashes (pHash) differ in at most this many bits "
        "are near duplicates; 0 groups identical hashes only.",
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
