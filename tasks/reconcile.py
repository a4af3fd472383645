"""Reconcile: each sample's fate from its row, its image and what the database holds (added, changed,
quarantined, retired or restored). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from foldwise.db import samples as sample_store
from foldwise.db.models import ACTIVE, QUARANTINED, RETIRED
from foldwise.tasks.image_checks import ImageFacts
from foldwise.tasks.label_files import SourceRows


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
        """How many samples had an event of this kind."""
        return sum(1 for _, event, _ in self.events if event == kind)


def as_stored(sample_id: int, values: dict, status: str, reason: str | None) -> sample_store.StoredSample:
    """A sample as it will be stored after the pull."""
    columns = {
        name: values[name] for name in ("key", "image_path", "content_hash", "file_size", "file_mtime_ns")
    }
    return sample_store.StoredSample(
        sample_id,
        **columns,
        pinned_to_gate_set=values["pinned_to_gate_set"],
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
    if before.pinned_to_gate_set != values["pinned_to_gate_set"]:
        parts.append(f"pinned to the gate set {before.pinned_to_gate_set} -> {values['pinned_to_gate_set']}")
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
            "pinned_to_gate_set": row.pinned_to_gate_set,
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
