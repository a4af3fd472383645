"""Data access for the labeled data: vocabulary, samples and their lifecycle, pulls and rejected rows."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from foldwise.db.models import ACTIVE, DataPull, Label, RejectedRow, Sample, SampleEvent, SampleLabel, utcnow

ADDED, CHANGED, QUARANTINED, RETIRED, RESTORED = "added", "changed", "quarantined", "retired", "restored"


@dataclass(frozen=True)
class StoredSample:
    """What the DB knows of a sample: enough to tell whether a new row changes it."""

    id: int
    key: str
    image_path: str
    content_hash: str
    file_size: int
    file_mtime_ns: int
    pinned_to_gate_set: bool
    status: str
    status_reason: str | None
    labels: frozenset[str]
    perceptual_hash: str | None = None  # None: not computed (yet, or data.near_duplicates off)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True)
class StatusChange:
    sample_id: int
    status: str
    reason: str | None
    event: str  # QUARANTINED, RETIRED or RESTORED


def label_ids(*, session: Session, names: set[str]) -> dict[str, int]:
    """Ids of the given labels, adding the ones not yet in the vocabulary."""
    known = {name: id_ for id_, name in session.execute(select(Label.id, Label.name))}
    missing = sorted(names - known.keys())
    if missing:
        rows = session.execute(
            insert(Label).returning(Label.id, Label.name), [{"name": name} for name in missing]
        )
        known.update({name: id_ for id_, name in rows})
    return known


def vocabulary(*, session: Session) -> list[str]:
    return list(session.scalars(select(Label.name).order_by(Label.name)))


def stored_samples(*, session: Session, active_only: bool = False) -> dict[str, StoredSample]:
    """Every sample by key (only the active ones, the data set, with `active_only`)."""
    labels_of: dict[int, set[str]] = defaultdict(set)
    for sample_id, name in session.execute(
        select(SampleLabel.sample_id, Label.name).join(Label, Label.id == SampleLabel.label_id)
    ):
        labels_of[sample_id].add(name)
    query = select(
        Sample.id,
        Sample.key,
        Sample.image_path,
        Sample.content_hash,
        Sample.file_size,
        Sample.file_mtime_ns,
        Sample.pinned_to_gate_set,
        Sample.status,
        Sample.status_reason,
        Sample.perceptual_hash,
    )
    if active_only:
        query = query.where(Sample.status == ACTIVE)
    return {
        row.key: StoredSample(*row[:-1], labels=frozenset(labels_of[row.id]), perceptual_hash=row[-1])
        for row in session.execute(query)
    }


def dataset_version(samples: Iterable[StoredSample]) -> str:
    """A short digest of the active samples' content: same samples, images and labels, same version."""
    digest = hashlib.sha256()
    for sample in sorted((s for s in samples if s.active), key=lambda s: s.key):
        labels = " ".join(sorted(sample.labels))
        digest.update(
            f"{sample.key}\t{sample.content_hash}\t{labels}\t{sample.pinned_to_gate_set}\n".encode()
        )
    return digest.hexdigest()[:16]


def create_pull(*, session: Session, source: str) -> DataPull:
    pull = DataPull(source=source, dataset_version="", started_at=utcnow())
    session.add(pull)
    session.flush()
    return pull


def _link_labels(session: Session, links: list[tuple[int, frozenset[str]]], labels: dict[str, int]) -> None:
    rows = [
        {"sample_id": sample_id, "label_id": labels[name]} for sample_id, names in links for name in names
    ]
    if rows:
        session.execute(insert(SampleLabel), rows)


def add_samples(
    *, session: Session, pull_id: int, samples: list[dict[str, Any]], labels: dict[str, int]
) -> dict[str, int]:
    """Insert new samples; each dict has the Sample columns plus `labels` (a set of names).
    Returns their ids by key."""
    if not samples:
        return {}
    now = utcnow()
    rows = [
        {k: v for k, v in s.items() if k != "labels"}
        | {"first_pull_id": pull_id, "updated_pull_id": pull_id, "first_seen": now}
        for s in samples
    ]
    ids = dict(session.execute(insert(Sample).returning(Sample.key, Sample.id), rows).all())
    _link_labels(session, [(ids[s["key"]], s["labels"]) for s in samples], labels)
    return ids


def update_samples(
    *, session: Session, pull_id: int, samples: list[tuple[int, dict[str, Any]]], labels: dict[str, int]
) -> None:
    """Overwrite changed samples (by id) with new columns and labels: a new version of each."""
    for sample_id, values in samples:
        columns = {k: v for k, v in values.items() if k not in ("labels", "key")}
        session.execute(
            update(Sample)
            .where(Sample.id == sample_id)
            .values(**columns, version=Sample.version + 1, updated_pull_id=pull_id)
        )
    changed = [sample_id for sample_id, _ in samples]
    for start in range(0, len(changed), 1000):
        session.execute(delete(SampleLabel).where(SampleLabel.sample_id.in_(changed[start : start + 1000])))
    _link_labels(session, [(sample_id, values["labels"]) for sample_id, values in samples], labels)


def set_perceptual_hashes(*, session: Session, hashes: dict[str, str]) -> None:
    """Record each image content's perceptual hash (by content hash) on every sample with that content."""
    for content_hash, perceptual_hash in hashes.items():
        session.execute(
            update(Sample).where(Sample.content_hash == content_hash).values(perceptual_hash=perceptual_hash)
        )


def set_statuses(*, session: Session, pull_id: int, changes: list[StatusChange]) -> None:
    for change in changes:
        session.execute(
            update(Sample)
            .where(Sample.id == change.sample_id)
            .values(status=change.status, status_reason=change.reason, updated_pull_id=pull_id)
        )


def add_events(*, session: Session, pull_id: int, events: list[tuple[int, str, str]]) -> None:
    """(sample id, kind, detail) rows of the audit trail."""
    if events:
        session.execute(
            insert(SampleEvent),
            [
                {"sample_id": s, "pull_id": pull_id, "kind": kind, "detail": detail}
                for s, kind, detail in events
            ],
        )


def known_rejections(*, session: Session) -> set[str]:
    return set(session.scalars(select(RejectedRow.fingerprint)))


def add_rejections(*, session: Session, pull_id: int, rejections: list[dict[str, Any]]) -> None:
    if rejections:
        session.execute(insert(RejectedRow), [r | {"pull_id": pull_id} for r in rejections])


def samples_with_status(*, session: Session, status: str) -> list[Sample]:
    return list(session.scalars(select(Sample).where(Sample.status == status).order_by(Sample.key)))


PULL_CHANGES = ("n_added", "n_updated", "n_restored", "n_quarantined", "n_retired")


def changes_between(
    *, session: Session, after_pull_id: int, up_to_pull_id: int
) -> tuple[int, dict[str, int]]:
    """How many pulls came after one, up to another, and their changes summed (by PULL_CHANGES)."""
    columns = [func.coalesce(func.sum(getattr(DataPull, name)), 0) for name in PULL_CHANGES]
    n_pulls, *sums = session.execute(
        select(func.count(), *columns).where(DataPull.id > after_pull_id, DataPull.id <= up_to_pull_id)
    ).one()
    return n_pulls, dict(zip(PULL_CHANGES, (int(total) for total in sums), strict=True))
