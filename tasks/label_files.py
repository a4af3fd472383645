"""Label files to rows: every label file read row by row into one usable row per id, and what could not
be used, with its reason.

A bad row is rejected with its reason, alone; a label file that cannot be read at all is rejected
whole. A label file that may still be being written waits for a later pull, unread: one whose last
line has no line break, or one that keeps changing within `data.settle_seconds` (`settled_files`). When rows disagree about an id, `data.on_conflict` decides: the latest row wins (files in
order of modification time, then name; rows in order), the first one does, or the id is rejected.

Labels are normalised by one rule: surrounding white space is dropped, Unicode is NFC, and case does
not matter: a label takes the spelling it was first known by (the vocabulary's, when one is set).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from foldwise.config import DataConfig, FoldwiseConfig, check_image_folder
from foldwise.errors import FoldwiseError

TRUE_VALUES = {"true", "1", "yes", "y", "t"}
FALSE_VALUES = {"false", "0", "no", "n", "f"}
MAX_KEY_LENGTH = 500  # the schema's limits, checked before the database sees a value
MAX_LABEL_LENGTH = 200


class IngestError(FoldwiseError, ValueError):
    """No label file that can be read as configured; nothing was recorded."""


class StillArriving(FoldwiseError):
    """A label file that looks half-written: it is read at a later pull."""


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
        """What makes two rejections the same: the file, the row as read and the reason."""
        return hashlib.sha256(f"{self.file}\x1e{self.text}\x1e{self.reason}".encode()).hexdigest()


@dataclass(frozen=True)
class LabeledRow:
    """A row that parsed; its image is checked later."""

    file: str
    line: int
    key: str
    image_path: Path
    labels: frozenset[str]
    pinned_to_gate_set: bool
    text: str

    def same_content(self, other: LabeledRow) -> bool:
        """Whether two rows of an id agree (labels and gate set pin)."""
        return (self.labels, self.pinned_to_gate_set) == (other.labels, other.pinned_to_gate_set)


@dataclass
class SourceRows:
    """What the label files say: one usable row per id, and what could not be used."""

    rows: dict[str, LabeledRow]
    rejections: list[Rejection]
    unusable: dict[str, str]  # ids that have rows, none of them usable: why
    complete: bool  # every label file could be read (else nothing is retired)
    n_rows: int
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (label file, why): read at a later pull


class LabelSpelling:
    """Label names matched without regard to case or surrounding space; each keeps the spelling it
    was first known by."""

    def __init__(self, known: Iterable[str]):
        self.spelling: dict[str, str] = {}
        for name in known:
            self.spelling.setdefault(self.key(name), name)

    @staticmethod
    def key(name: str) -> str:
        """What two spellings of one label share."""
        return unicodedata.normalize("NFC", name.strip()).casefold()

    def known(self, name: str) -> str | None:
        """The spelling `name` is known by, or None."""
        return self.spelling.get(self.key(name))

    def canonical(self, name: str) -> str:
        """The spelling `name` is known by; a new label keeps its own (NFC, stripped)."""
        return self.spelling.setdefault(self.key(name), unicodedata.normalize("NFC", name.strip()))


CONTROL_CHARACTER_NAMES = {"\t": "a tab", "\x00": "a NUL byte"}


def control_character(text: str, allowed: str = "") -> str | None:
    """The first control character of `text` other than those in `allowed`, named; None when none."""
    for char in text:
        if unicodedata.category(char) == "Cc" and char not in allowed:
            return "a control character: " + CONTROL_CHARACTER_NAMES.get(char, f"U+{ord(char):04X}")
    return None


def printable(text: str, limit: int) -> str:
    """The start of a rejected id, control characters escaped: PostgreSQL refuses NUL in any text.
    A valid id (short enough, no control character) stays as it is."""
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text[:limit])


def parse_labels(cell: str, data: DataConfig, spelling: LabelSpelling) -> tuple[frozenset[str], str | None]:
    """The label names of one cell, or the reason the cell is rejected."""
    if "\n" in cell or "\r" in cell:
        return frozenset(), "the labels cell spans several lines (a quoted line break)"
    control = control_character(cell, allowed=data.label_delimiter)
    if control:
        return frozenset(), f"the labels cell holds {control}"
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


def settle_window(config: FoldwiseConfig) -> float:
    """How long a file must stay unchanged to be read whole: `data.settle_seconds` for a local source;
    nothing for a download, which Foldwise itself moves into the source folder whole."""
    return config.data.settle_seconds if config.source.kind == "local" else 0.0


def settled_files(files: list[Path], seconds: float) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files unchanged for `seconds`, and those that are not, with why. A pull waits (once, at
    most `seconds`) for the files that changed just now; those that change again meanwhile are still
    being written, and wait for the next pull."""
    if seconds <= 0 or not files:
        return files, []
    before = {path: path.stat() for path in files}
    youngest = min(time.time() - status.st_mtime for status in before.values())
    if youngest >= seconds:
        return files, []
    time.sleep(min(seconds, seconds - youngest))  # a date in the future waits no longer than the window
    ready, waiting = [], []
    for path in files:
        now, then = path.stat(), before[path]
        if (now.st_mtime_ns, now.st_size) == (then.st_mtime_ns, then.st_size):
            ready.append(path)
        else:
            waiting.append(
                (path, f"it changed within data.settle_seconds ({seconds:g} s): still being written")
            )
    return ready, waiting


@dataclass(frozen=True)
class LabelFile:
    """A label file's header and rows, as read."""

    columns: dict[str, int]  # position of each configured column
    width: int  # fields in the header
    records: list[tuple[int, list[str]]]  # (line, fields) of each row after the header


def read_label_file(path: Path, data: DataConfig) -> LabelFile:
    """The rows of a label file, IngestError when the file as a whole cannot be used, StillArriving
    when its last line is cut short."""
    content = path.read_bytes()
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # Cut inside a character, a file being written is not UTF-8 yet: only its end says so.
        if error.reason != "unexpected end of data":
            raise IngestError(
                f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}): save it as UTF-8"
            ) from None
    if content and not content.endswith((b"\n", b"\r")):
        raise StillArriving(
            "its last line has no line break, as when the file is still being written: it is read "
            "once it ends with one"
        )
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
    """One row of a label file as a usable row, or its rejection with the reason."""
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
    control = control_character(key)
    if control:
        return Rejection(file, line, printable(key, 80), f"the id holds {control}", text)
    image_path = resolve_image_path(config.image_folder().resolve(), key, data.image_suffix)
    if image_path is None:
        return Rejection(file, line, key, "image name escapes the image folder", text)
    labels, problem = parse_labels(fields[columns[data.label_column]], data, spelling)
    if problem:
        return Rejection(file, line, key, problem, text)
    pinned = False
    if data.fixed_split_column:
        flag = fields[columns[data.fixed_split_column]].lower()
        if flag not in TRUE_VALUES | FALSE_VALUES:
            return Rejection(file, line, key, f"{data.fixed_split_column}={flag!r} is not a boolean", text)
        pinned = flag in TRUE_VALUES
    return LabeledRow(file, line, key, image_path, labels, pinned, text)


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
    ready, unsettled = settled_files(files, settle_window(config))
    waiting = [(str(path.relative_to(config.source.path)), why) for path, why in unsettled]
    n_rows = 0
    for path in ready:
        name = str(path.relative_to(config.source.path))
        try:
            label_file = read_label_file(path, config.data)
        except StillArriving as error:
            waiting.append((name, str(error)))
            continue
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
    settled.complete = not unreadable and not waiting  # a waiting file may name any sample: none is retired
    settled.n_rows = n_rows
    settled.waiting = waiting
    return settled
