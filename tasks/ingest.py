"""Ingest: reconcile the source folder (label files and images) with the database, pull by pull.

Every pull reads every label file row by row and checks every image, then decides each sample's fate:
- added, or changed (a new version) when its image content or labels changed;
- quarantined, with the reason, when its image is gone, unreadable or too large, or when none of its
  rows can be used; it is retried at every pull and comes back when its file or row is fixed;
- retired when no label file names it any more (`data.on_removed = "retire"`, the default);
- restored when a quarantined or retired sample is usable again;
- left as it was when its label file or image is still being written (it waits for a later pull).
The data set is the active samples; its version covers exactly their ids, image hashes and labels.

A bad row is rejected with its reason (`label_files`), recorded once, at the first pull that meets
it; when a label file cannot be read at all, no sample is retired in that pull.

The steps, one module each: `label_files` (label files to rows), `image_checks` (images to facts,
decoded into the image cache), `reconcile` (each sample's fate); this one writes the pull.
Parsing and image checks happen before the DB is touched; one pull's records are then written in one
transaction, so a malformed file or a crash changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foldwise.config import FoldwiseConfig
from foldwise.db import samples as sample_store
from foldwise.db.models import utcnow
from foldwise.db.session import ensure_schema, session_scope
from foldwise.errors import is_disk_error
from foldwise.tasks.cache import reclaim
from foldwise.tasks.folds import data_set_duplicates
from foldwise.tasks.image_checks import (
    extreme_aspect_ratios,
    hold_arriving,
    inspect_images,
    perceptual_hashes,
)
from foldwise.tasks.label_files import Rejection, SourceRows, read_source
from foldwise.tasks.logs import get_logger
from foldwise.tasks.reconcile import reconcile
from foldwise.tasks.sources import fetch

MAX_LOGGED = 20

PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: I/O and network hiccups. Not: data or settings that the user must fix, nor a full
    disk or a refused write (waiting a minute frees no space)."""
    return (
        isinstance(error, OSError) and not isinstance(error, PERMANENT_OS_ERRORS) and not is_disk_error(error)
    )


@dataclass
class PullSummary:
    """What one pull found and changed."""

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
    waiting: list[str] = field(default_factory=list)  # label files and images still being written, why
    extreme_aspect: list[tuple[str, str]] = field(default_factory=list)  # (id, its shape) of images decoded
    n_duplicate_groups: int = 0  # in the data set after the pull, as the folds group them
    n_duplicate_samples: int = 0  # samples in those groups
    n_conflicting_groups: int = 0  # groups whose members disagree on labels: label noise

    @property
    def n_rejected(self) -> int:
        """Rows (or files) first rejected in this pull."""
        return len(self.rejections)

    def change_summary(self) -> str:
        """The pull's changes in words, e.g. '3 added, 1 retired'."""
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
        waiting = f"; {len(self.waiting)} still being written, left to the next pull" if self.waiting else ""
        aspect = f"; {len(self.extreme_aspect)} of extreme aspect ratio" if self.extreme_aspect else ""
        duplicates = (
            f", {self.n_duplicate_groups} duplicate groups ({self.n_duplicate_samples} samples, "
            f"{self.n_conflicting_groups} with conflicting labels)"
            if self.n_duplicate_groups
            else ""
        )
        return (
            f"pull {self.pull_id}: {self.n_rows} rows, {self.change_summary()}, {self.n_unchanged} unchanged, "
            f"{rejected}, {self.n_decoded} images decoded{aspect}; data set {self.dataset_version} has "
            f"{self.dataset_size} samples{duplicates}{labels}{waiting}"
        )


def log_pull(summary: PullSummary, source: SourceRows, retire_absent: bool, config: FoldwiseConfig) -> None:
    """The pull's rejections and quarantines (the first few), its warnings and its summary."""
    log = get_logger(__name__)
    for rejection in summary.rejections[:MAX_LOGGED]:
        log.warning("rejected %s", rejection)
    for key, reason in summary.quarantined[:MAX_LOGGED]:
        log.warning("quarantined %s: %s", key, reason)
    hidden = max(0, len(summary.rejections) - MAX_LOGGED) + max(0, len(summary.quarantined) - MAX_LOGGED)
    if hidden:
        log.warning("... and %d more (see `foldwise samples` and the dashboard's Data page)", hidden)
    for what in summary.waiting[:MAX_LOGGED]:
        log.warning("waiting for %s", what)
    for key, shape in summary.extreme_aspect[:MAX_LOGGED]:
        log.warning("image of %s is %s", key, shape)
    if not source.complete and config.data.on_removed == "retire":
        why = "is still being written" if source.waiting else "could not be read"
        log.warning("a label file %s: no sample retired in this pull", why)
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
    arriving = hold_arriving(source, facts, stored)
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
        sample_store.set_perceptual_hashes(session=session, hashes=perceptual_hashes(facts))
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
            waiting=[f"label file {name}: {why}" for name, why in source.waiting]
            + [f"the image of {key}: {why}" for key, why in arriving],
            extreme_aspect=extreme_aspect_ratios(facts, config.data.max_aspect_ratio),
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
    duplicates = data_set_duplicates(config)  # read back: the perceptual hashes this pull stored included
    summary.n_duplicate_groups = len(duplicates.groups)
    summary.n_duplicate_samples = sum(len(group) for group in duplicates.groups)
    summary.n_conflicting_groups = len(duplicates.conflicting)
    reclaimed = reclaim(config, keep={sample.content_hash for sample in active})
    if reclaimed:
        get_logger(__name__).info("image cache: reclaimed %d items of images no sample uses", reclaimed)
    log_pull(summary, source, retire_absent, config)
    return summary
