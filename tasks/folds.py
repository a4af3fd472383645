"""Multi-label stratified folds (iterative stratification), rebuilt or extended as data grows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from foldwise.config import FoldsConfig, FoldwiseConfig
from foldwise.db import folds as fold_store
from foldwise.db import registry
from foldwise.db import samples as sample_store
from foldwise.db.folds import GATE_SET
from foldwise.db.session import session_scope
from foldwise.tasks.logs import get_logger


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
        raise ValueError(f"{len(labels)} samples cannot fill {n_folds} folds; lower folds.n_folds")
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


def plan_folds(
    sample_ids: list[int],
    label_sets: list[frozenset[str]],
    in_gate_set: list[bool],
    settings: FoldsConfig,
    previous: fold_store.StoredFoldSet | None,
) -> FoldPlan:
    label_names = sorted(set().union(*label_sets)) if label_sets else []
    column = {name: index for index, name in enumerate(label_names)}
    matrix = np.zeros((len(sample_ids), len(label_names)), dtype=np.int8)
    for row, labels in enumerate(label_sets):
        matrix[row, [column[name] for name in labels]] = 1
    gate_set = np.array(in_gate_set, dtype=bool)
    folds = np.full(len(sample_ids), GATE_SET, dtype=int)
    trainable = np.flatnonzero(~gate_set)
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
        old, new = trainable[kept != GATE_SET], trainable[kept == GATE_SET]
        folds[old] = kept[kept != GATE_SET]
        if len(new):
            old_counts = np.stack([matrix[old][folds[old] == f].sum(axis=0) for f in range(settings.n_folds)])
            old_sizes = np.bincount(folds[old], minlength=settings.n_folds)
            continued = continue_stratification(matrix[new], old_counts, old_sizes, settings.seed)
            folds[new] = refine_by_swaps(continued, matrix[new], old_counts)
    else:
        folds[trainable] = stratified_folds(matrix[trainable], settings.n_folds, settings.seed)

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


def gate_set(config: FoldwiseConfig, samples: list[sample_store.StoredSample]) -> list[bool]:
    """Samples no fold trains on: the fixed split when configured, else a sticky stratified fraction.

    A sample's membership is decided once, the first time folds are built with it, and kept. A
    sample that some fold set already trained on (the gate set was enabled later) never joins it:
    a model that learnt it would be judged on it.
    """
    if config.data.fixed_split_column:
        return [sample.pinned_to_gate_set for sample in samples]
    if config.gate.fraction == 0:
        return [False] * len(samples)
    url = config.resolved_database_url()
    with session_scope(url) as session:
        known = registry.gate_memberships(session=session)
        undecided = [sample for sample in samples if known.get(sample.id) is None]
        trained_on = registry.trained_on(session=session, sample_ids=[sample.id for sample in undecided])
    decided = {sample.id: False for sample in undecided if sample.id in trained_on}
    undecided = [sample for sample in undecided if sample.id not in trained_on]
    if undecided:
        names = sorted(set().union(*(sample.labels for sample in undecided)))
        matrix = np.array([[name in sample.labels for name in names] for sample in undecided], dtype=np.int8)
        chosen = choose_gate_members(matrix, config.gate.fraction, config.folds.seed)
        decided |= {sample.id: bool(member) for sample, member in zip(undecided, chosen, strict=True)}
    if decided:
        with session_scope(url) as session:
            registry.set_gate_memberships(session=session, members=decided)
        known |= decided
    return [bool(known[sample.id]) for sample in samples]


def build_folds(config: FoldwiseConfig, dataset_version: str) -> int:
    """Assign the current samples to folds and record them; returns the fold set id."""
    log = get_logger(__name__)
    url = config.resolved_database_url()
    with session_scope(url) as session:
        samples = list(sample_store.stored_samples(session=session, active_only=True).values())
        previous = fold_store.latest_fold_set(session=session)
    samples.sort(key=lambda sample: sample.id)
    plan = plan_folds(
        [s.id for s in samples],
        [s.labels for s in samples],
        gate_set(config, samples),
        config.folds,
        previous,
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
