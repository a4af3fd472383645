"""Ingest: read the label files of the source folder, check every image, record what is new.

All parsing and image checks happen before the DB is touched; the records of one pull are then
written in one transaction, so a malformed file or a crash changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from db import samples as sample_store
from db.models import utcnow
from db.session import ensure_schema, session_scope
from foldwise.config import DataConfig, FoldwiseConfig, check_image_folder
from foldwise.errors import FoldwiseError
from tasks.logs import get_logger
from tasks.sources import fetch

TRUE_VALUES = {"true", "1", "yes", "y", "t"}
FALSE_VALUES = {"false", "0", "no", "n", "f"}
MAX_LOGGED_REJECTIONS = 20


class IngestError(FoldwiseError, ValueError):
    """A label file that cannot be read as configured; nothing was recorded."""


PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: I/O and network hiccups. Not: data or settings that the user must fix."""
    return isinstance(error, OSError) and not isinstance(error, PERMANENT_OS_ERRORS)


def retry_pull(task, task_run, state) -> bool:
    """Prefect's retry condition for the pull: retry transient errors only."""
    try:
        state.result()
    except BaseException as error:
        return is_transient(error)
    return False


@dataclass(frozen=True)
class Rejection:
    file: str
    line: int
    key: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ({self.key or 'no id'}): {self.reason}"


@dataclass(frozen=True)
class LabeledRow:
    """A row that parsed; its image is checked later."""

    file: str
    line: int
    key: str
    image_path: Path
    labels: frozenset[str]
    is_fixed_holdout: bool


@dataclass(frozen=True)
class ImageFacts:
    content_hash: str
    file_size: int
    file_mtime_ns: int


@dataclass
class PullSummary:
    pull_id: int
    n_rows: int
    n_added: int
    n_updated: int
    n_unchanged: int
    dataset_version: str
    dataset_size: int
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return len(self.rejections)

    def __str__(self) -> str:
        return (
            f"pull {self.pull_id}: {self.n_rows} rows, {self.n_added} added, {self.n_updated} updated, "
            f"{self.n_unchanged} unchanged, {self.n_rejected} rejected; "
            f"data set {self.dataset_version} has {self.dataset_size} samples"
        )


def read_label_file(path: Path, data: DataConfig) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise IngestError(f"{path} is not a readable CSV file: {error}") from None
    required = [data.id_column, data.label_column] + (
        [data.fixed_split_column] if data.fixed_split_column else []
    )
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise IngestError(
            f"{path} lacks the column(s) {missing}; it has {list(frame.columns)[:10]}. "
            "Set data.id_column, data.label_column or data.fixed_split_column to match the file."
        )
    return frame


def parse_labels(cell: str, data: DataConfig) -> tuple[frozenset[str], str | None]:
    """The label names of one cell, or the reason the cell is rejected."""
    tokens = [token.strip() for token in cell.split(data.label_delimiter)]
    tokens = [token for token in tokens if token]
    if data.label_names is not None:
        unknown = [token for token in tokens if token not in data.label_names]
        if unknown:
            return frozenset(), f"unknown label id(s) {unknown} (not in data.label_names)"
        tokens = [data.label_names[token] for token in tokens]
    if data.vocabulary is not None:
        unknown = [token for token in tokens if token not in data.vocabulary]
        if unknown:
            return frozenset(), f"unknown label(s) {unknown} (not in data.vocabulary)"
    if not tokens and not data.allow_empty_labels:
        return frozenset(), "no labels (set data.allow_empty_labels=true to accept such rows)"
    return frozenset(tokens), None


def resolve_image_path(image_folder: Path, key: str, suffix: str) -> Path | None:
    """The image file of an id, or None when the name would escape the image folder.

    Checked on the normalised name (no file system calls: this runs for every row of every pull).
    """
    name = key + suffix
    if os.path.isabs(name) or "\\" in name or "\x00" in name:
        return None
    folder = str(image_folder)
    path = os.path.normpath(os.path.join(folder, name))
    return Path(path) if path.startswith(folder + os.sep) else None


def parse_rows(frame: pd.DataFrame, file: str, config: FoldwiseConfig) -> Iterable[LabeledRow | Rejection]:
    data = config.data
    image_folder = config.image_folder().resolve()
    split_values = frame[data.fixed_split_column] if data.fixed_split_column else [""] * len(frame)
    for index, (raw_key, cell, split) in enumerate(
        zip(frame[data.id_column], frame[data.label_column], split_values, strict=True)
    ):
        line = index + 2  # line 1 is the header
        key = raw_key.strip()
        if not key:
            yield Rejection(file, line, None, "empty id")
            continue
        image_path = resolve_image_path(image_folder, key, data.image_suffix)
        if image_path is None:
            yield Rejection(file, line, key, "image name escapes the image folder")
            continue
        labels, problem = parse_labels(cell, data)
        if problem:
            yield Rejection(file, line, key, problem)
            continue
        holdout = False
        if data.fixed_split_column:
            flag = split.strip().lower()
            if flag not in TRUE_VALUES | FALSE_VALUES:
                yield Rejection(file, line, key, f"{data.fixed_split_column}={split!r} is not a boolean")
                continue
            holdout = flag in TRUE_VALUES
        yield LabeledRow(file, line, key, image_path, labels, holdout)


def inspect_image(path: Path) -> ImageFacts | str:
    """Hash and fully decode one image; a string says why it is unusable."""
    try:
        stat = path.stat()
        content = path.read_bytes()
    except FileNotFoundError:
        return f"image file {path} not found"
    except OSError as error:
        return f"image file {path} cannot be read: {error.strerror}"
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        return f"corrupt image {path.name}: {error}"
    return ImageFacts(hashlib.sha256(content).hexdigest(), stat.st_size, stat.st_mtime_ns)


def inspect_images(paths: list[Path]) -> list[ImageFacts | str]:
    return [inspect_image(path) for path in paths]


def unchanged_facts(row: LabeledRow, stored: sample_store.StoredSample | None) -> ImageFacts | None:
    """The stored facts when the file is the same one (path, size, mtime): no need to decode again."""
    if stored is None or stored.image_path != str(row.image_path):
        return None
    try:
        stat = row.image_path.stat()
    except OSError:
        return None
    if (stat.st_size, stat.st_mtime_ns) != (stored.file_size, stored.file_mtime_ns):
        return None
    return ImageFacts(stored.content_hash, stored.file_size, stored.file_mtime_ns)


def read_source(config: FoldwiseConfig) -> tuple[list[LabeledRow], list[Rejection], int]:
    """Every parsed row of every label file (later files win nothing: a repeated id is rejected)."""
    check_image_folder(config)
    files = sorted(path for path in config.source.path.glob(config.data.label_files) if path.is_file())
    if not files:
        raise IngestError(
            f"no label files match {config.data.label_files!r} in {config.source.path}; set data.label_files"
        )
    rows: list[LabeledRow] = []
    rejections: list[Rejection] = []
    first_seen: dict[str, LabeledRow] = {}
    n_rows = 0
    frames = [(path, read_label_file(path, config.data)) for path in files]  # all files parse, or none count
    for path, frame in frames:
        n_rows += len(frame)
        name = str(path.relative_to(config.source.path))
        for item in parse_rows(frame, name, config):
            if isinstance(item, Rejection):
                rejections.append(item)
            elif item.key in first_seen:
                earlier = first_seen[item.key]
                rejections.append(
                    Rejection(
                        item.file,
                        item.line,
                        item.key,
                        f"duplicate id (first at {earlier.file}:{earlier.line})",
                    )
                )
            else:
                first_seen[item.key] = item
                rows.append(item)
    return rows, rejections, n_rows


def ingest(config: FoldwiseConfig) -> PullSummary:
    log = get_logger(__name__)
    url = config.resolved_database_url()
    fetch(config)  # a remote source (Kaggle, URL) is brought into source.path first
    rows, rejections, n_rows = read_source(config)
    ensure_schema(url)
    log.info("read %d rows from %s; checking images", n_rows, config.source.path)

    with session_scope(url) as session:
        stored = sample_store.stored_samples(session=session)
    known = [unchanged_facts(row, stored.get(row.key)) for row in rows]
    to_check = [row.image_path for row, facts in zip(rows, known, strict=True) if facts is None]
    # Decoding releases the GIL; chunks keep the per-future overhead small for tiny images.
    chunks = [to_check[start : start + 256] for start in range(0, len(to_check), 256)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checked = iter([facts for chunk in pool.map(inspect_images, chunks) for facts in chunk])
    facts_of = [facts if facts is not None else next(checked) for facts in known]

    added, updated = [], []
    n_unchanged = 0
    final = dict(stored)
    for row, facts in zip(rows, facts_of, strict=True):
        if isinstance(facts, str):
            rejections.append(Rejection(row.file, row.line, row.key, facts))
            continue
        values = {
            "key": row.key,
            "image_path": str(row.image_path),
            "content_hash": facts.content_hash,
            "file_size": facts.file_size,
            "file_mtime_ns": facts.file_mtime_ns,
            "is_fixed_holdout": row.is_fixed_holdout,
            "labels": row.labels,
        }
        before = stored.get(row.key)
        after = sample_store.StoredSample(id=before.id if before else -1, **values)
        if before is None:
            added.append(values)
        elif (before.content_hash, before.labels, before.is_fixed_holdout, before.image_path) != (
            after.content_hash,
            after.labels,
            after.is_fixed_holdout,
            after.image_path,
        ):
            updated.append((before.id, values))
        else:
            n_unchanged += 1
        final[row.key] = after

    version = sample_store.dataset_version(final.values())
    with session_scope(url) as session:
        pull = sample_store.create_pull(session=session, source=str(config.source.path))
        names = {name for values in added for name in values["labels"]}
        names |= {name for _, values in updated for name in values["labels"]}
        labels = sample_store.label_ids(session=session, names=names)
        sample_store.add_samples(session=session, pull_id=pull.id, samples=added, labels=labels)
        sample_store.update_samples(session=session, pull_id=pull.id, samples=updated, labels=labels)
        sample_store.add_rejections(
            session=session,
            pull_id=pull.id,
            rejections=[
                {"file": r.file, "line": r.line, "sample_key": r.key, "reason": r.reason} for r in rejections
            ],
        )
        summary = PullSummary(
            pull_id=pull.id,
            n_rows=n_rows,
            n_added=len(added),
            n_updated=len(updated),
            n_unchanged=n_unchanged,
            dataset_version=version,
            dataset_size=len(final),
            rejections=rejections,
        )
        pull.n_rows, pull.n_added, pull.n_updated = n_rows, len(added), len(updated)
        pull.n_unchanged, pull.n_rejected = summary.n_unchanged, summary.n_rejected
        pull.dataset_version, pull.dataset_size = version, len(final)
        pull.finished_at = utcnow()

    for rejection in rejections[:MAX_LOGGED_REJECTIONS]:
        log.warning("rejected %s", rejection)
    if len(rejections) > MAX_LOGGED_REJECTIONS:
        log.warning(
            "... and %d more rejected rows (see the dashboard's Data page)",
            len(rejections) - MAX_LOGGED_REJECTIONS,
        )
    log.info("%s", summary)
    return summary
