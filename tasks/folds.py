"""Multi-label stratified folds (iterative stratification), rebuilt or extended as data grows.

Samples whose images are the same (one content hash) or nearly the same (perceptual hashes within
`data.near_duplicate_distance` bits, with `data.near_duplicates`) form a duplicate group: a group shares one fold
and is wholly in or out of the gate set, else a model would be scored on an image it trained on.
Stratification works on groups (one row per group, with the union of its members' labels).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from foldwise.config import FoldsConfig, FoldwiseConfig
from foldwise.db import folds as fold_store
from foldwise.db import registry
from foldwise.db import samples as sample_store
from foldwise.db.folds import GATE_SET
from foldwise.db.session import session_scope
from foldwise.duplicates import Duplicates, describe_group
from foldwise.tasks.logs import get_logger

MAX_NAMED = 10  # conflicting duplicate groups named in a fold set's warning


@dataclass
class FoldPlan:
    """Fold per sample (GATE_SET for the gate set), with what it was built from."""

    sample_ids: list[int]
    folds: np.ndarray
    label_names: list[str]
    label_matrix: np.ndarray
    strategy: str
    parent_id: int | None
    warnings: list[str]

    def counts(self, n_folds: int) -> np.ndarray:
        """Positives per fold (rows) and label (columns), gate set excluded."""
        return np.stack([self.label_matrix[self.folds == fold].sum(axis=0) for fold in range(n_folds)])


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per row; samples without labels still spread evenly (they are one 'combination')."""
    folds = np.full(len(labels), GATE_SET, dtype=int)
    if len(labels) < n_folds:
        raise ValueError(
            f"{len(labels)} samples (a group of duplicate images counts once) cannot fill {n_folds} folds; "
            "lower folds.n_folds"
        )
    # An extra "no label" column stratifies label-less samples instead of dumping them anywhere.
    with_empty = np.hstack([labels, (labels.sum(axis=1) == 0)[:, None]]).astype(int)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, valid_index) in enumerate(splitter.split(np.zeros(len(labels)), with_empty)):
        folds[valid_index] = fold
    return folds


def continue_stratification(
    labels: np.ndarray, old_counts: np.ndarray, old_sizes: np.ndarray, seed: int
) -> np.ndarray:
    """Fold per new sample, continuing iterative stratification from the folds' existing counts.

    The algorithm of Sechidis et al. (2011), as iterative-stratification implements it, except that
    each fold's wanted counts start at the ideal share of old + new minus what it already holds.
    Rarest labels first; each sample goes to the fold that wants its label most (ties: the fold that
    wants most samples, then random).
    """
    rng = np.random.default_rng(seed)
    n_folds = len(old_sizes)
    wanted_labels = (old_counts.sum(axis=0) + labels.sum(axis=0)) / n_folds - old_counts
    wanted_sizes = (old_sizes.sum() + len(labels)) / n_folds - old_sizes
    folds = np.full(len(labels), GATE_SET, dtype=int)
    waiting = np.ones(len(labels), dtype=bool)
    while waiting.any():
        remaining = labels[waiting].sum(axis=0)
        if remaining.sum() == 0:
            order = np.flatnonzero(waiting)  # label-less samples: by size alone
            label = None
        else:
            rarest = np.flatnonzero(remaining == remaining[remaining > 0].min())
            label = int(rng.choice(rarest))
            order = np.flatnonzero(waiting & (labels[:, label] > 0))
        for index in order:
            want = wanted_labels[:, label] if label is not None else wanted_sizes
            best = np.flatnonzero(want == want.max())
            best = best[wanted_sizes[best] == wanted_sizes[best].max()]
            fold = int(rng.choice(best))
            folds[index] = fold
            waiting[index] = False
            wanted_labels[fold] -= labels[index]
            wanted_sizes[fold] -= 1
    return folds


def refine_by_swaps(
    folds: np.ndarray, labels: np.ndarray, old_counts: np.ndarray, max_samples: int = 800
) -> np.ndarray:
    """Swap pairs of new samples between folds while that lowers the deviation from ideal counts.

    Swaps keep fold sizes. Greedy continuation leaves a label off by more than one now and then,
    mostly when few samples are new; swaps mend most of that. The cost is the 4th power of each
    deviation, so the largest deviations go first. Large drops rarely need this (and the pairwise
    search is quadratic), so they are left as they are.
    """
    if len(folds) > max_samples:
        return folds
    n_folds = len(old_counts)
    folds = folds.copy()
    vectors = labels.astype(float)
    counts = old_counts + np.stack([vectors[folds == f].sum(axis=0) for f in range(n_folds)])
    ideal = counts.sum(axis=0) / n_folds
    for _ in range(len(folds)):
        # Swapping i (fold a) with j (fold b) moves d = v_j - v_i into a and out of b.
        dev = counts[folds] - ideal  # deviation of each sample's fold
        d = vectors[None, :, :] - vectors[:, None, :]
        dev_a, dev_b = dev[:, None, :], dev[None, :, :]
        change = ((dev_a + d) ** 4 + (dev_b - d) ** 4 - dev_a**4 - dev_b**4).sum(axis=2)
        i, j = np.unravel_index(np.argmin(change), change.shape)
        if change[i, j] >= -1e-9:
            break
        a, b = folds[i], folds[j]
        counts[a] += vectors[j] - vectors[i]
        counts[b] += vectors[i] - vectors[j]
        folds[i], folds[j] = b, a
    return folds


def find_duplicates(
    config: FoldwiseConfig, samples: list[sample_store.StoredSample]
) -> Duplicates[sample_store.StoredSample]:
    """The samples' duplicate groups as configured: exact copies always, near ones with near_duplicates."""
    near = config.data.near_duplicate_distance if config.data.near_duplicates else None
    return Duplicates.of(samples, near)


def data_set_duplicates(config: FoldwiseConfig) -> Duplicates[sample_store.StoredSample]:
    """The duplicate groups of the current data set (the active samples)."""
    with session_scope(config.resolved_database_url()) as session:
        samples = list(sample_store.stored_samples(session=session, active_only=True).values())
    samples.sort(key=lambda sample: sample.id)
    return find_duplicates(config, samples)


def keep_groups_together(kept: np.ndarray, group_of: np.ndarray, n_groups: int) -> tuple[np.ndarray, int]:
    """Fold per group from its members' kept folds (GATE_SET: none kept), and how many groups straddled
    folds before: such a group (folds built before grouping) moves whole to its members' commonest fold."""
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    for group, fold in zip(group_of.tolist(), kept.tolist(), strict=True):
        if fold != GATE_SET:
            votes[group][fold] += 1
    group_folds = np.full(n_groups, GATE_SET, dtype=int)
    for group, counter in votes.items():
        group_folds[group] = min(counter, key=lambda fold: (-counter[fold], fold))
    return group_folds, sum(1 for counter in votes.values() if len(counter) > 1)


def plan_folds(
    sample_ids: list[int],
    label_sets: list[frozenset[str]],
    in_gate_set: list[bool],
    settings: FoldsConfig,
    previous: fold_store.StoredFoldSet | None,
    groups: Sequence[int] | None = None,
) -> FoldPlan:
    """Fold per sample. `groups` (see `foldwise.duplicates`; default: every sample alone) are kept whole:
    one fold per group, and a group with a gate set member is all in the gate set."""
    label_names = sorted(set().union(*label_sets)) if label_sets else []
    column = {name: index for index, name in enumerate(label_names)}
    matrix = np.zeros((len(sample_ids), len(label_names)), dtype=np.int8)
    for row, labels in enumerate(label_sets):
        matrix[row, [column[name] for name in labels]] = 1
    # Groups numbered in order of their first member: without duplicates, group g is sample g.
    _, group_of = np.unique(np.arange(len(sample_ids)) if groups is None else groups, return_inverse=True)
    n_groups = int(group_of.max()) + 1 if len(group_of) else 0
    group_matrix = np.zeros((n_groups, len(label_names)), dtype=np.int8)
    np.maximum.at(group_matrix, group_of, matrix)
    group_in_gate_set = np.zeros(n_groups, dtype=bool)
    np.logical_or.at(group_in_gate_set, group_of, np.array(in_gate_set, dtype=bool))
    gate_set = group_in_gate_set[group_of]
    group_folds = np.full(n_groups, GATE_SET, dtype=int)
    trainable = np.flatnonzero(~gate_set)
    trainable_groups = np.flatnonzero(~group_in_gate_set)
    warnings: list[str] = []

    strategy, parent_id = settings.strategy, None
    if strategy == "extend" and previous is not None:
        if (previous.n_folds, previous.seed) != (settings.n_folds, settings.seed):
            warnings.append(
                f"folds rebuilt: n_folds/seed changed from {previous.n_folds}/{previous.seed} "
                f"to {settings.n_folds}/{settings.seed}"
            )
            strategy = "rebuild"
    elif strategy == "extend":
        strategy = "rebuild"  # nothing to extend yet

    if strategy == "extend":
        parent_id = previous.id
        kept = np.array([previous.folds.get(sample_ids[i], GATE_SET) for i in trainable], dtype=int)
        group_folds, n_straddling = keep_groups_together(kept, group_of[trainable], n_groups)
        if n_straddling:
            warnings.append(
                f"{n_straddling} duplicate groups straddled folds in fold set {previous.id}: "
                "each moved whole into one fold"
            )
        old = trainable[group_folds[group_of[trainable]] != GATE_SET]  # new copies of old images included
        new_groups = trainable_groups[group_folds[trainable_groups] == GATE_SET]
        if len(new_groups):
            old_folds = group_folds[group_of[old]]
            old_counts = np.stack([matrix[old][old_folds == f].sum(axis=0) for f in range(settings.n_folds)])
            old_sizes = np.bincount(old_folds, minlength=settings.n_folds)
            continued = continue_stratification(
                group_matrix[new_groups], old_counts, old_sizes, settings.seed
            )
            group_folds[new_groups] = refine_by_swaps(continued, group_matrix[new_groups], old_counts)
    else:
        group_folds[trainable_groups] = stratified_folds(
            group_matrix[trainable_groups], settings.n_folds, settings.seed
        )
    folds = group_folds[group_of]

    support = matrix[trainable].sum(axis=0)
    rare = [name for name, count in zip(label_names, support, strict=True) if count < settings.n_folds]
    if rare:
        warnings.append(
            f"labels with fewer samples than folds ({settings.n_folds}), absent from some folds: "
            + ", ".join(
                f"{name} ({count})" for name, count in zip(label_names, support, strict=True) if name in rare
            )
        )
    return FoldPlan(sample_ids, folds, label_names, matrix, strategy, parent_id, warnings)


def choose_gate_members(matrix: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified `fraction` of the rows (iterative stratification), as a boolean mask."""
    members = np.zeros(len(matrix), dtype=bool)
    n_gate = round(len(matrix) * fraction)
    if n_gate == 0:
        return members
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_gate, random_state=seed)
    _, gate_rows = next(splitter.split(np.zeros(len(matrix)), matrix))
    members[gate_rows] = True
    return members


def gate_set(
    config: FoldwiseConfig, samples: list[sample_store.StoredSample], groups: Sequence[int]
) -> list[bool]:
    """Samples no fold trains on: the fixed split when configured, else a sticky stratified fraction.

    Duplicate groups are decided whole. A group's membership is decided once, the first time folds are
    built with it, and kept: a new copy of a gate set image joins the gate set. A group that some fold
    set already trained on (the gate set was enabled later, or a copy was in a fold before grouping)
    is never in it: a model that learnt it would be judged on it.
    """
    if config.data.fixed_split_column:
        # A copy of a pinned image in a fold would leak it into training: the group goes with the pin.
        pinned = {groups[row] for row, sample in enumerate(samples) if sample.pinned_to_gate_set}
        return [group in pinned for group in groups]
    if config.gate.fraction == 0:
        return [False] * len(samples)
    url = config.resolved_database_url()
    rows_of: dict[int, list[int]] = defaultdict(list)
    for row, group in enumerate(groups):
        rows_of[group].append(row)
    with session_scope(url) as session:
        known = registry.gate_memberships(session=session)
        # Only groups with an undecided member or a gate set member can change.
        open_ids = [
            samples[row].id
            for rows in rows_of.values()
            if any(known.get(samples[row].id) is not False for row in rows)
            for row in rows
        ]
        trained_on = registry.trained_on(session=session, sample_ids=open_ids)
    membership: dict[int, bool] = {}
    undecided: list[int] = []
    for group, rows in rows_of.items():
        states = {known.get(samples[row].id) for row in rows}
        if any(samples[row].id in trained_on for row in rows):
            membership[group] = False
        elif True in states or False in states:
            membership[group] = True in states
        else:
            undecided.append(group)
    if undecided:
        label_sets = [frozenset().union(*(samples[row].labels for row in rows_of[g])) for g in undecided]
        names = sorted(set().union(*label_sets))
        matrix = np.array([[name in labels for name in names] for labels in label_sets], dtype=np.int8)
        chosen = choose_gate_members(matrix, config.gate.fraction, config.folds.seed)
        membership |= {group: bool(member) for group, member in zip(undecided, chosen, strict=True)}
    decided = {
        samples[row].id: membership[group]
        for row, group in enumerate(groups)
        if known.get(samples[row].id) is not membership[group]
    }
    left = sum(1 for sample_id, member in decided.items() if known.get(sample_id) is True and not member)
    if left:
        get_logger(__name__).warning(
            "%d gate set samples left the gate set: a duplicate of each was trained on", left
        )
    if decided:
        with session_scope(url) as session:
            registry.set_gate_memberships(session=session, members=decided)
    return [membership[group] for group in groups]


def build_folds(config: FoldwiseConfig, dataset_version: str) -> int:
    """Assign the current samples to folds and record them; returns the fold set id."""
    log = get_logger(__name__)
    url = config.resolved_database_url()
    duplicates = data_set_duplicates(config)
    with session_scope(url) as session:
        previous = fold_store.latest_fold_set(session=session)
    samples, groups = duplicates.samples, duplicates.group_of
    plan = plan_folds(
        [s.id for s in samples],
        [s.labels for s in samples],
        gate_set(config, samples, groups),
        config.folds,
        previous,
        groups,
    )
    if duplicates.groups:
        log.info("%s: each group kept in one fold or wholly in the gate set", duplicates)
    conflicts = duplicates.conflicting
    if conflicts:
        plan.warnings.append(
            f"{len(conflicts)} duplicate groups have conflicting labels (label noise): "
            + "; ".join(describe_group(group) for group in conflicts[:MAX_NAMED])
            + ("; ..." if len(conflicts) > MAX_NAMED else "")
        )
    for warning in plan.warnings:
        log.warning("%s", warning)
    with session_scope(url) as session:
        fold_set_id = fold_store.save_fold_set(
            session=session,
            strategy=plan.strategy,
            n_folds=config.folds.n_folds,
            seed=config.folds.seed,
            parent_id=plan.parent_id,
            dataset_version=dataset_version,
            assignment=dict(zip(plan.sample_ids, plan.folds.tolist(), strict=True)),
            label_names=plan.label_names,
            counts=plan.counts(config.folds.n_folds),
            warnings=plan.warnings,
        )
    sizes = np.bincount(plan.folds[plan.folds >= 0], minlength=config.folds.n_folds)
    log.info(
        "fold set %d (%s): fold sizes %s, gate set %d",
        fold_set_id,
        plan.strategy,
        sizes.tolist(),
        int((plan.folds == GATE_SET).sum()),
    )
    return fold_set_id
