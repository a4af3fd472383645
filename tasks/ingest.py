"""Ingest: reconcile the source folder (label files and images) with the database, pull by pull.

Every pull reads every label file row by row and checks every image, then decides each sample's fate:
- added, or changed (a new version) when its image content or labels changed;
- quarantined, with the reason, when its image is gone, unreadable or too large, or when none of its
  rows can be used; it is retried at every pull and comes back when its file or row is fixed;
- retired when no label file names it any more (`data.on_removed = "retire"`, the default);
- restored when a quarantined or retired sample is usable again.
The data set is the active samples; its version covers exactly their ids, image hashes and labels.

A bad row is rejected with its reason, alone (recorded once, at the first pull that meets it); a
label file that cannot be read at all is rejected whole, and then no sample is retired in that pull.
When rows disagree about an id, `data.on_conflict` decides: the latest row wins (files in order of
modification time, then name; rows in order), the first one does, or the id is rejected.

Labels are normalised by one rule: surrounding white space is dropped, Unicode is NFC, and case does
not matter: a label takes the spelling it was first known by (the vocabulary's, when one is set).

Parsing and image checks happen before the DB is touched; one pull's records are then written in one
transaction, so a malformed file or a crash changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
from foldwise.db import samples as sample_store
from foldwise.db.models import ACTIVE, QUARANTINED, RETIRED, utcnow
from foldwise.db.session import ensure_schema, session_scope
from foldwise.tasks.cache import ImageCache, decode_size, make_items, reclaim
from foldwise.tasks.images import UnreadableImage, decode_image, parallel_map, read_image_file
from foldwise.tasks.logs import get_logger
from foldwise.tasks.sources import fetch

from foldwise.config import DataConfig, FoldwiseConfig, check_image_folder
from foldwise.errors import FoldwiseError

TRUE_VALUES = {"true", "1", "yes", "y", "t"}
FALSE_VALUES = {"false", "0", "no", "n", "f"}
MAX_LOGGED = 20
MAX_KEY_LENGTH = 500  # the schema's limits, checked before the database sees a value
MAX_LABEL_LENGTH = 200


class IngestError(FoldwiseError, ValueError):
    """No label file that can be read as configured; nothing was recorded."""


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
    """A row (or, with line 0, a whole file) that cannot be used."""

    file: str
    line: int
    key: str | None
    reason: str
    text: str = ""  # the row as read: with the file and the reason, what makes it the same rejection

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} ({self.key or 'no id'}): {self.reason}"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.file}\x1e{self.text}\x1e{self.reason}".encode()).hexdigest()


@dataclass(frozen=True)
class LabeledRow:
    """A row that parsed; its image is checked later."""

    file: str
    line: int
    key: str
    image_path: Path
    labels: frozenset[str]
    is_fixed_holdout: bool
    text: str

    def same_content(self, other: LabeledRow) -> bool:
        return (self.labels, self.is_fixed_holdout) == (other.labels, other.is_fixed_holdout)


@dataclass(frozen=True)
class ImageFacts:
    content_hash: str
    file_size: int
    file_mtime_ns: int


@dataclass
class SourceRows:
    """What the label files say: one usable row per id, and what could not be used."""

    rows: dict[str, LabeledRow]
    rejections: list[Rejection]
    unusable: dict[str, str]  # ids that have rows, none of them usable: why
    complete: bool  # every label file could be read (else nothing is retired)
    n_rows: int


@dataclass
class PullSummary:
    pull_id: int
    n_rows: int
    n_added: int
    n_updated: int
    n_unchanged: int
    dataset_version: str
    dataset_size: int  # active samples
    n_quarantined: int = 0
    n_retired: int = 0
    n_restored: int = 0
    n_known_rejections: int = 0  # rejected again, as at an earlier pull: not recorded again
    n_decoded: int = 0  # images decoded (into the image cache) by this pull
    new_labels: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)  # first met in this pull
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (id, why), this pull's

    @property
    def n_rejected(self) -> int:
        return len(self.rejections)

    def change_summary(self) -> str:
        parts = [
            (self.n_added, "added"),
            (self.n_updated, "updated"),
            (self.n_restored, "restored"),
            (self.n_quarantined, "quarantined"),
            (self.n_retired, "retired"),
        ]
        return ", ".join(f"{count} {what}" for count, what in parts if count) or "no sample changed"

    def __str__(self) -> str:
        rejected = f"{self.n_rejected} rejected"
        if self.n_known_rejections:
            rejected += f" ({self.n_known_rejections} more as before)"
        labels = f"; new labels: {', '.join(self.new_labels)}" if self.new_labels else ""
        return (
            f"pull {self.pull_id}: {self.n_rows} rows, {self.change_summary()}, {self.n_unchanged} unchanged, "
            f"{rejected}, {self.n_decoded} images decoded; data set {self.dataset_version} has "
            f"{self.dataset_size} samples{labels}"
        )


class LabelSpelling:
    """Label names matched without regard to case or surrounding space; each keeps the spelling it
    was first known by."""

    def __init__(self, known: Iterable[str]):
        self.spelling: dict[str, str] = {}
        for name in known:
            self.spelling.setdefault(self.key(name), name)

    @staticmethod
    def key(name: str) -> str:
        return unicodedata.normalize("NFC", name.strip()).casefold()

    def known(self, name: str) -> str | None:
        return self.spelling.get(self.key(name))

    def canonical(self, name: str) -> str:
        return self.spelling.setdefault(self.key(name), unicodedata.normalize("NFC", name.strip()))


def has_control_characters(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(char) == "Cc" and char not in allowed for char in text)


def printable(text: str, limit: int) -> str:
    """The start of a rejected id, control characters escaped: PostgreSQL refuses NUL in any text.
    A valid id (short enough, no control character) stays as it is."""
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text[:limit])


def parse_labels(cell: str, data: DataConfig, spelling: LabelSpelling) -> tuple[frozenset[str], str | None]:
    """The label names of one cell, or the reason the cell is rejected."""
    if "\n" in cell or "\r" in cell:
        return frozenset(), "the labels cell spans several lines (a quoted line break)"
    if has_control_characters(cell, allowed=data.label_delimiter):
        return frozenset(), "the labels cell holds a control character (a NUL byte, say)"
    # NFC before the length check: it can lengthen a name (U+0958 becomes two code points).
    tokens = [unicodedata.normalize("NFC", token.strip()) for token in cell.split(data.label_delimiter)]
    tokens = [token for token in tokens if token]
    if data.label_names is not None:
        unknown = [token for token in tokens if token not in data.label_names]
        if unknown:
            return frozenset(), f"unknown label id(s) {unknown} (not in data.label_names)"
        tokens = [data.label_names[token] for token in tokens]
    if data.vocabulary is not None:
        unknown = [token for token in tokens if spelling.known(token) is None]
        if unknown:
            return frozenset(), f"unknown label(s) {unknown} (not in data.vocabulary)"
    too_long = [token[:40] + "..." for token in tokens if len(token) > MAX_LABEL_LENGTH]
    if too_long:
        return frozenset(), f"label(s) longer than {MAX_LABEL_LENGTH} characters: {too_long}"
    if not tokens and not data.allow_empty_labels:
        return frozenset(), "no labels (set data.allow_empty_labels=true to accept such rows)"
    return frozenset(spelling.canonical(token) for token in tokens), None


def resolve_image_path(image_folder: Path, key: str, suffix: str) -> Path | None:
    """The image file of an id, or None when the name would escape the image folder.

    Checked on the normalised name (no file system calls: this runs for every row of every pull)."""
    name = key + suffix
    if os.path.isabs(name) or "\\" in name:
        return None
    folder = str(image_folder)
    path = os.path.normpath(os.path.join(folder, name))
    return Path(path) if path.startswith(folder + os.sep) else None


def label_files(config: FoldwiseConfig) -> list[Path]:
    """The label files, oldest first (modification time, then name): later rows are newer."""
    files = [path for path in config.source.path.glob(config.data.label_files) if path.is_file()]
    return sorted(files, key=lambda path: (path.stat().st_mtime_ns, path.name))


@dataclass(frozen=True)
class LabelFile:
    columns: dict[str, int]  # position of each configured column
    width: int  # fields in the header
    records: list[tuple[int, list[str]]]  # (line, fields) of each row after the header


def read_label_file(path: Path, data: DataConfig) -> LabelFile:
    """The rows of a label file, or IngestError when the file as a whole cannot be used."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise IngestError(
            f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}): save it as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    records, line = [], 1
    for fields in reader:
        if fields:
            records.append((line, [value.strip() for value in fields]))
        line = reader.line_num + 1
    if not records:
        raise IngestError("empty: no header row")
    header = records[0][1]
    required = [data.id_column, data.label_column] + (
        [data.fixed_split_column] if data.fixed_split_column else []
    )
    missing = [column for column in required if column not in header]
    if missing:
        raise IngestError(
            f"lacks the column(s) {missing}; it has {header[:10]}. "
            "Set data.id_column, data.label_column or data.fixed_split_column to match the file"
        )
    return LabelFile({name: header.index(name) for name in required}, len(header), records[1:])


def parse_record(
    file: str,
    line: int,
    fields: list[str],
    label_file: LabelFile,
    config: FoldwiseConfig,
    spelling: LabelSpelling,
) -> LabeledRow | Rejection:
    data, columns = config.data, label_file.columns
    text = "\x1f".join(fields)
    if len(fields) != label_file.width:
        has_id = len(fields) > columns[data.id_column]
        key = printable(fields[columns[data.id_column]], MAX_KEY_LENGTH) if has_id else None
        return Rejection(file, line, key, f"has {len(fields)} fields, the header {label_file.width}", text)
    key = fields[columns[data.id_column]]
    if not key:
        return Rejection(file, line, None, "empty id", text)
    if len(key) > MAX_KEY_LENGTH:
        reason = f"the id has {len(key)} characters, more than {MAX_KEY_LENGTH}"
        return Rejection(file, line, printable(key, 80) + "...", reason, text)
    if has_control_characters(key):
        return Rejection(
            file, line, printable(key, 80), "the id holds a control character (a NUL byte, say)", text
        )
    image_path = resolve_image_path(config.image_folder().resolve(), key, data.image_suffix)
    if image_path is None:
        return Rejection(file, line, key, "image name escapes the image folder", text)
    labels, problem = parse_labels(fields[columns[data.label_column]], data, spelling)
    if problem:
        return Rejection(file, line, key, problem, text)
    holdout = False
    if data.fixed_split_column:
        flag = fields[columns[data.fixed_split_column]].lower()
        if flag not in TRUE_VALUES | FALSE_VALUES:
            return Rejection(file, line, key, f"{data.fixed_split_column}={flag!r} is not a boolean", text)
        holdout = flag in TRUE_VALUES
    return LabeledRow(file, line, key, image_path, labels, holdout, text)


def settle_conflicts(rows_by_key: dict[str, list[LabeledRow]], policy: str) -> SourceRows:
    """One row per id, by `data.on_conflict`; rows that repeat the winner are not conflicts."""
    result = SourceRows({}, [], {}, True, 0)
    for key, rows in rows_by_key.items():
        winner = rows[-1] if policy == "latest" else rows[0]
        disagreeing = [row for row in rows if not row.same_content(winner)]
        if not disagreeing:
            result.rows[key] = winner
        elif policy == "reject":
            places = ", ".join(f"{row.file}:{row.line}" for row in rows)
            reason = f"rows disagree on its labels ({places}; data.on_conflict = 'reject')"
            result.unusable[key] = reason
            result.rejections += [Rejection(row.file, row.line, key, reason, row.text) for row in rows]
        else:
            result.rows[key] = winner
            if policy == "first":
                result.rejections += [
                    Rejection(
                        row.file,
                        row.line,
                        key,
                        f"conflicts with {winner.file}:{winner.line}, which wins (data.on_conflict = 'first')",
                        row.text,
                    )
                    for row in disagreeing
                ]
    return result


def read_source(config: FoldwiseConfig, known_labels: Iterable[str] = ()) -> SourceRows:
    """Every label file, row by row: one usable row per id, rejections with reasons."""
    check_image_folder(config)
    files = label_files(config)
    if not files:
        raise IngestError(
            f"no label files match {config.data.label_files!r} in {config.source.path}; set data.label_files"
        )
    spelling = LabelSpelling(config.data.vocabulary if config.data.vocabulary is not None else known_labels)
    rows_by_key: dict[str, list[LabeledRow]] = {}
    rejections: list[Rejection] = []
    unreadable: list[Rejection] = []
    n_rows = 0
    for path in files:
        name = str(path.relative_to(config.source.path))
        try:
            label_file = read_label_file(path, config.data)
        except IngestError as error:
            unreadable.append(Rejection(name, 0, None, f"label file {name} cannot be used: {error}"))
            continue
        n_rows += len(label_file.records)
        for line, fields in label_file.records:
            item = parse_record(name, line, fields, label_file, config, spelling)
            if isinstance(item, Rejection):
                rejections.append(item)
            else:
                rows_by_key.setdefault(item.key, []).append(item)
    if len(unreadable) == len(files):
        raise IngestError("; ".join(rejection.reason for rejection in unreadable))
    settled = settle_conflicts(rows_by_key, config.data.on_conflict)
    rejected_keys = {r.key for r in rejections if r.key} - settled.rows.keys() - settled.unusable.keys()
    for rejection in rejections:
        if rejection.key in rejected_keys:
            settled.unusable.setdefault(rejection.key, f"its row is rejected: {rejection.reason}")
    settled.rejections = unreadable + rejections + settled.rejections
    settled.complete = not unreadable
    settled.n_rows = n_rows
    return settled


@dataclass(frozen=True)
class ImageCheck:
    """One image to check, and the hash under which it needs no decoding: an active sample's whose
    items are all in the cache already."""

    path: Path
    trusted_hash: str | None


def inspect_image(
    check: ImageCheck, source_root: Path, max_pixels: int, sizes: list[int]
) -> tuple[ImageFacts | str, dict[int, np.ndarray] | None]:
    """Hash the image and, unless its content is trusted, decode it whole into its cache items; a
    string says why it cannot be used. Links out of the source folder are not followed."""
    path = check.path
    name = path.relative_to(source_root) if path.is_relative_to(source_root) else path
    try:
        # os.path's, not Path.resolve: on Python 3.11 a link loop raises RuntimeError there.
        real = Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        return f"image file {name} not found", None
    except OSError as error:
        return f"image file {name} cannot be read: {error.strerror}", None
    if not real.is_relative_to(source_root):
        return f"image file {name} is a link to {real}, outside the source folder: not followed", None
    try:
        content, status = read_image_file(real, name)
        facts = ImageFacts(hashlib.sha256(content).hexdigest(), status.st_size, status.st_mtime_ns)
        if facts.content_hash == check.trusted_hash:
            return facts, None
        pixels = decode_image(content, name, max_pixels, min_size=decode_size(sizes))
    except UnreadableImage as error:
        return str(error), None
    return facts, make_items(pixels, sizes)


def inspect_chunk(
    checks: list[ImageCheck], source_root: Path, max_pixels: int, sizes: list[int]
) -> list[tuple[ImageFacts | str, dict[int, np.ndarray] | None]]:
    return [inspect_image(check, source_root, max_pixels, sizes) for check in checks]


def inspect_images(
    rows: list[LabeledRow], config: FoldwiseConfig, stored: dict[str, sample_store.StoredSample]
) -> tuple[list[ImageFacts | str], int]:
    """Facts of every row's image, in order, and how many images were decoded. Each decoded image goes
    into the image cache at every size the config needs: it is never decoded again."""
    cache = ImageCache(config)

    def trusted(sample: sample_store.StoredSample | None) -> str | None:
        if sample is None or not sample.active or cache.missing(sample.content_hash):
            return None
        return sample.content_hash

    checks = [ImageCheck(row.image_path, trusted(stored.get(row.key))) for row in rows]
    inspect = partial(
        inspect_chunk,
        source_root=config.source.path.resolve(),
        max_pixels=config.data.max_image_pixels,
        sizes=cache.sizes,
    )
    facts, batch, n_decoded = [], {}, 0
    for fact, items in parallel_map(inspect, checks):
        facts.append(fact)
        if items is not None:
            batch[fact.content_hash] = items
            n_decoded += 1
        if len(batch) >= 256:  # bounded memory; the cache is keyed by content, so early writes are safe
            cache.add(batch)
            batch = {}
    cache.add(batch)
    return facts, n_decoded


@dataclass
class Reconciliation:
    """What a pull changes: the rows to write, the statuses to set, the audit trail."""

    added: list[dict] = field(default_factory=list)  # Sample columns + labels, for new samples
    updated: list[tuple[int, dict]] = field(default_factory=list)  # (id, new columns + labels)
    status_changes: list[sample_store.StatusChange] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (sample key, kind, detail)
    final: dict[str, sample_store.StoredSample] = field(default_factory=dict)  # every sample after
    n_unchanged: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for _, event, _ in self.events if event == kind)


def as_stored(sample_id: int, values: dict, status: str, reason: str | None) -> sample_store.StoredSample:
    columns = {
        name: values[name] for name in ("key", "image_path", "content_hash", "file_size", "file_mtime_ns")
    }
    return sample_store.StoredSample(
        sample_id,
        **columns,
        is_fixed_holdout=values["is_fixed_holdout"],
        status=status,
        status_reason=reason,
        labels=values["labels"],
    )


def describe_change(before: sample_store.StoredSample, values: dict) -> str:
    """What a new version of a sample changes, in words; empty when nothing did."""
    parts = []
    if before.labels != values["labels"]:
        old, new = (" ".join(sorted(labels)) or "(none)" for labels in (before.labels, values["labels"]))
        parts.append(f"labels {old} -> {new}")
    if before.content_hash != values["content_hash"]:
        parts.append("image changed")
    if before.is_fixed_holdout != values["is_fixed_holdout"]:
        parts.append(f"holdout {before.is_fixed_holdout} -> {values['is_fixed_holdout']}")
    if before.image_path != values["image_path"]:
        parts.append("image path changed")
    return "; ".join(parts)


def reconcile(
    source: SourceRows,
    facts: dict[str, ImageFacts | str],
    stored: dict[str, sample_store.StoredSample],
    retire_absent: bool,
) -> Reconciliation:
    """Decide each sample's fate from its row, its image and what the DB holds. Pure: no I/O."""
    plan = Reconciliation(final=dict(stored))

    def set_status(before: sample_store.StoredSample, status: str, reason: str | None, kind: str) -> None:
        plan.status_changes.append(sample_store.StatusChange(before.id, status, reason, kind))
        plan.events.append((before.key, kind, reason or f"was {before.status}: {before.status_reason}"))
        plan.final[before.key] = replace(before, status=status, status_reason=reason)

    for key, row in source.rows.items():
        before, image = stored.get(key), facts[key]
        values = {
            "key": key,
            "image_path": str(row.image_path),
            "is_fixed_holdout": row.is_fixed_holdout,
            "labels": row.labels,
        }
        if isinstance(image, str):  # quarantined until its file is fixed; retried at every pull
            if before is None:
                values |= {"content_hash": "", "file_size": -1, "file_mtime_ns": 0}
                plan.added.append(values | {"status": QUARANTINED, "status_reason": image})
                plan.events.append((key, sample_store.QUARANTINED, image))
                plan.final[key] = as_stored(-1, values, QUARANTINED, image)
            elif (before.status, before.status_reason) != (QUARANTINED, image):
                set_status(before, QUARANTINED, image, sample_store.QUARANTINED)
            continue
        values |= {
            "content_hash": image.content_hash,
            "file_size": image.file_size,
            "file_mtime_ns": image.file_mtime_ns,
        }
        if before is None:
            plan.added.append(values | {"status": ACTIVE})
            plan.events.append((key, sample_store.ADDED, ""))
            plan.final[key] = as_stored(-1, values, ACTIVE, None)
            continue
        if not before.active:
            set_status(before, ACTIVE, None, sample_store.RESTORED)
        change = describe_change(before, values)
        if change:
            plan.updated.append((before.id, values))
            plan.events.append((key, sample_store.CHANGED, change))
        elif before.active:
            plan.n_unchanged += 1
        plan.final[key] = as_stored(before.id, values, ACTIVE, None)

    for key, reason in source.unusable.items():
        before = stored.get(key)
        if before is not None and (before.status, before.status_reason) != (QUARANTINED, reason):
            set_status(before, QUARANTINED, reason, sample_store.QUARANTINED)

    if retire_absent:
        for key, before in stored.items():
            if key not in source.rows and key not in source.unusable and before.status != RETIRED:
                set_status(before, RETIRED, "no longer in any label file", sample_store.RETIRED)
    return plan


def log_pull(summary: PullSummary, source: SourceRows, retire_absent: bool, config: FoldwiseConfig) -> None:
    log = get_logger(__name__)
    for rejection in summary.rejections[:MAX_LOGGED]:
        log.warning("rejected %s", rejection)
    for key, reason in summary.quarantined[:MAX_LOGGED]:
        log.warning("quarantined %s: %s", key, reason)
    hidden = max(0, len(summary.rejections) - MAX_LOGGED) + max(0, len(summary.quarantined) - MAX_LOGGED)
    if hidden:
        log.warning("... and %d more (see `foldwise samples` and the dashboard's Data page)", hidden)
    if not source.complete and config.data.on_removed == "retire":
        log.warning("a label file could not be read: no sample retired in this pull")
    if summary.new_labels:
        log.warning("new labels in this pull: %s", ", ".join(summary.new_labels))
    log.info("%s", summary)


def ingest(config: FoldwiseConfig) -> PullSummary:
    """Pull the source and reconcile it with the database (see the module's docstring)."""
    url = config.resolved_database_url()
    fetch(config)  # a remote source (Kaggle, URL) is brought into source.path first
    ensure_schema(url)
    with session_scope(url) as session:
        stored = sample_store.stored_samples(session=session)
        known_labels = sample_store.vocabulary(session=session)
        known_rejections = sample_store.known_rejections(session=session)
    source = read_source(config, known_labels)
    get_logger(__name__).info("read %d rows from %s; checking images", source.n_rows, config.source.path)
    rows = list(source.rows.values())
    checked, n_decoded = inspect_images(rows, config, stored)
    facts = dict(zip(source.rows, checked, strict=True))
    retire_absent = config.data.on_removed == "retire" and source.complete
    plan = reconcile(source, facts, stored, retire_absent)
    new = [r for r in dict.fromkeys(source.rejections) if r.fingerprint not in known_rejections]
    active = [s for s in plan.final.values() if s.active]
    version = sample_store.dataset_version(active)

    with session_scope(url) as session:
        pull = sample_store.create_pull(session=session, source=str(config.source.path))
        names = {name for values in plan.added for name in values["labels"]}
        names |= {name for _, values in plan.updated for name in values["labels"]}
        new_labels = sorted(names - set(known_labels))
        labels = sample_store.label_ids(session=session, names=names)
        ids = sample_store.add_samples(session=session, pull_id=pull.id, samples=plan.added, labels=labels)
        sample_store.update_samples(session=session, pull_id=pull.id, samples=plan.updated, labels=labels)
        sample_store.set_statuses(session=session, pull_id=pull.id, changes=plan.status_changes)
        sample_store.add_events(
            session=session,
            pull_id=pull.id,
            events=[(ids.get(key) or stored[key].id, kind, detail) for key, kind, detail in plan.events],
        )
        sample_store.add_rejections(
            session=session,
            pull_id=pull.id,
            rejections=[
                {
                    "file": r.file,
                    "line": r.line,
                    "sample_key": r.key,
                    "reason": r.reason,
                    "fingerprint": r.fingerprint,
                }
                for r in new
            ],
        )
        summary = PullSummary(
            pull_id=pull.id,
            n_rows=source.n_rows,
            n_added=plan.count(sample_store.ADDED),
            n_updated=plan.count(sample_store.CHANGED),
            n_unchanged=plan.n_unchanged,
            dataset_version=version,
            dataset_size=len(active),
            n_quarantined=plan.count(sample_store.QUARANTINED),
            n_retired=plan.count(sample_store.RETIRED),
            n_restored=plan.count(sample_store.RESTORED),
            n_known_rejections=len(set(source.rejections)) - len(new),
            n_decoded=n_decoded,
            new_labels=new_labels,
            rejections=new,
            quarantined=[(key, why) for key, kind, why in plan.events if kind == sample_store.QUARANTINED],
        )
        pull.n_rows, pull.n_added, pull.n_updated = summary.n_rows, summary.n_added, summary.n_updated
        pull.n_unchanged, pull.n_rejected = summary.n_unchanged, summary.n_rejected
        pull.n_quarantined, pull.n_retired, pull.n_restored = (
            summary.n_quarantined,
            summary.n_retired,
            summary.n_restored,
        )
        pull.new_labels = new_labels
        pull.dataset_version, pull.dataset_size = version, summary.dataset_size
        pull.finished_at = utcnow()
    reclaimed = reclaim(config, keep={sample.content_hash for sample in active})
    if reclaimed:
        get_logger(__name__).info("image cache: reclaimed %d items of images no sample uses", reclaimed)
    log_pull(summary, source, retire_absent, config)
    return summary
