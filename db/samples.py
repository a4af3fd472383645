"""Data access for the labeled data: vocabulary, samples, pulls and rejected rows."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from db.models import DataPull, Label, RejectedRow, Sample, SampleLabel, utcnow


@dataclass(frozen=True)
class StoredSample:
    """What the DB knows of a sample: enough to tell whether a new row changes it."""

    id: int
    key: str
    image_path: str
    content_hash: str
    file_size: int
    file_mtime_ns: int
    is_fixed_holdout: bool
    labels: frozenset[str]


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


def stored_samples(*, session: Session) -> dict[str, StoredSample]:
    labels_of: dict[int, set[str]] = defaultdict(set)
    for sample_id, name in session.execute(
        select(SampleLabel.sample_id, Label.name).join(Label, Label.id == SampleLabel.label_id)
    ):
        labels_of[sample_id].add(name)
    result = {}
    for row in session.execute(
        select(
            Sample.id,
            Sample.key,
            Sample.image_path,
            Sample.content_hash,
            Sample.file_size,
            Sample.file_mtime_ns,
            Sample.is_fixed_holdout,
        )
    ):
        result[row.key] = StoredSample(*row, labels=frozenset(labels_of[row.id]))
    return result


def dataset_version(samples: list[StoredSample] | Any) -> str:
    """A short digest of the data set's content: same samples, images and labels, same version."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.key):
        labels = " ".join(sorted(sample.labels))
        digest.update(f"{sample.key}\t{sample.content_hash}\t{labels}\t{sample.is_fixed_holdout}\n".encode())
    return digest.hexdigest()[:16]


def create_pull(*, session: Session, source: str) -> DataPull:
    pull = DataPull(source=source, dataset_version="", started_at=utcnow())
    session.add(pull)
    session.flush()
    return pull


def add_samples(
    *, session: Session, pull_id: int, samples: list[dict[str, Any]], labels: dict[str, int]
) -> None:
    """Insert new samples; each dict has the Sample columns plus `labels` (a set of names)."""
    if not samples:
        return
    now = utcnow()
    rows = [
        {k: v for k, v in s.items() if k != "labels"}
        | {"first_pull_id": pull_id, "updated_pull_id": pull_id, "first_seen": now}
        for s in samples
    ]
    ids = dict(session.execute(insert(Sample).returning(Sample.key, Sample.id), rows).all())
    links = [{"sample_id": ids[s["key"]], "label_id": labels[name]} for s in samples for name in s["labels"]]
    if links:
        session.execute(insert(SampleLabel), links)


def update_samples(
    *, session: Session, pull_id: int, samples: list[tuple[int, dict[str, Any]]], labels: dict[str, int]
) -> None:
    """Overwrite changed samples (by id) with new columns and labels."""
    for sample_id, values in samples:
        columns = {k: v for k, v in values.items() if k not in ("labels", "key")}
        session.execute(
            update(Sample).where(Sample.id == sample_id).values(**columns, updated_pull_id=pull_id)
        )
    changed = [sample_id for sample_id, _ in samples]
    if changed:
        session.execute(delete(SampleLabel).where(SampleLabel.sample_id.in_(changed)))
        links = [
            {"sample_id": sample_id, "label_id": labels[name]}
            for sample_id, values in samples
            for name in values["labels"]
        ]
        if links:
            session.execute(insert(SampleLabel), links)


def add_rejections(*, session: Session, pull_id: int, rejections: list[dict[str, Any]]) -> None:
    if rejections:
        session.execute(insert(RejectedRow), [r | {"pull_id": pull_id} for r in rejections])
