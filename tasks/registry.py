"""The champion gate, and promotion and rollback by hand. Every decision is recorded with its numbers.

A candidate (a successful run's ensemble) replaces the champion when, on the gate set, its score on
the configured metric (`thresholds.metric`) is not worse than the champion's by more than
`gate.tolerance`, and no class with at least
`gate.min_support` gate positives loses more than `gate.max_class_drop`. Both are scored on the
labels they share; labels only one of them knows are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from foldwise import metrics
from foldwise.config import FoldwiseConfig, GateConfig, ThresholdConfig
from foldwise.db import folds as fold_store
from foldwise.db import queries, registry
from foldwise.db import samples as sample_store
from foldwise.db.folds import GATE_SET
from foldwise.db.models import Run
from foldwise.db.session import session_scope
from foldwise.errors import FoldwiseError
from foldwise.tasks.cache import CachedImage, ImageCache, ensure_cached
from foldwise.tasks.ensemble import EnsembleModel, load_model, write_model_record
from foldwise.tasks.logs import get_logger
from foldwise.tasks.predict import ensemble_probabilities, model_item_size
from foldwise.tasks.runs import describe_error, training_lock


class RegistryError(FoldwiseError, ValueError):
    """A promotion or rollback that cannot be done; the message says why."""


@dataclass(frozen=True)
class Scored:
    """A model's gate probabilities, with what is needed to turn them into decisions."""

    run_id: int
    vocab: list[str]
    thresholds: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def judge(
    candidate: Scored,
    champion: Scored,
    truth_sets: list[set[str]],
    settings: ThresholdConfig,
    gate: GateConfig,
) -> Verdict:
    """Compare two scored models on the gate set, on their shared labels. Pure: no I/O."""
    shared = sorted(set(candidate.vocab) & set(champion.vocab))
    truth = np.array([[label in labels for label in shared] for labels in truth_sets], dtype=bool).reshape(
        -1, len(shared)
    )

    def predicted(model: Scored) -> np.ndarray:
        columns = [model.vocab.index(label) for label in shared]
        return model.probabilities[:, columns] >= model.thresholds[columns]

    beta, name = settings.beta, metrics.name(settings)
    new, old = predicted(candidate), predicted(champion)
    new_score, old_score = metrics.score(new, truth, settings), metrics.score(old, truth, settings)
    new_classes, old_classes = metrics.class_scores(new, truth, beta), metrics.class_scores(old, truth, beta)
    support = truth.sum(axis=0)
    regressions = [
        (label, float(old_f), float(new_f), int(n))
        for label, new_f, old_f, n in zip(shared, new_classes, old_classes, support, strict=True)
        if n >= gate.min_support and old_f - new_f > gate.max_class_drop
    ]
    details = {
        "metric": settings.metric,
        "beta": beta,
        "gate_samples": len(truth_sets),
        "candidate_fbeta": new_score,
        "champion_fbeta": old_score,
        "shared_labels": shared,
        "only_candidate": sorted(set(candidate.vocab) - set(champion.vocab)),
        "only_champion": sorted(set(champion.vocab) - set(candidate.vocab)),
        "classes": {
            label: {"candidate": float(n), "champion": float(o), "support": int(s)}
            for label, n, o, s in zip(shared, new_classes, old_classes, support, strict=True)
        },
        "regressions": [label for label, *_ in regressions],
    }
    versus = f"gate {name} {new_score:.4f} vs champion run {champion.run_id} {old_score:.4f} on {len(shared)} shared labels"
    if details["only_candidate"] or details["only_champion"]:
        versus += (
            f" (only in candidate: {details['only_candidate']}; only in champion: {details['only_champion']})"
        )
    if new_score < old_score - gate.tolerance:
        return Verdict(
            False, f"rejected: {versus}; worse by more than the tolerance {gate.tolerance:g}", details
        )
    if regressions:
        worst = ", ".join(
            f"{label} {old_f:.3f} -> {new_f:.3f} ({n} positives)" for label, old_f, new_f, n in regressions
        )
        return Verdict(
            False, f"rejected: {versus}; classes lose more than {gate.max_class_drop:g}: {worst}", details
        )
    return Verdict(True, f"promoted: {versus}", details)


@dataclass(frozen=True)
class GateSamples:
    samples: list[sample_store.StoredSample]
    excluded: int  # gate-set samples left out because a compared model trained on them

    @property
    def truth_sets(self) -> list[set[str]]:
        return [set(sample.labels) for sample in self.samples]


def gate_samples(config: FoldwiseConfig, run_ids: list[int]) -> GateSamples:
    """The active samples of the current gate set that none of the compared models, nor any model
    their weights descend from, ever trained on."""
    with session_scope(config.resolved_database_url()) as session:
        latest = fold_store.latest_fold_set(session=session)
        trained_by = registry.training_folds(
            session=session,
            run_ids=[
                ancestor
                for run_id in run_ids
                for ancestor in registry.lineage(session=session, run_id=run_id)
            ],
        )
        samples = sample_store.stored_samples(session=session, active_only=True)
    members = sorted(
        (s for s in samples.values() if latest is not None and latest.folds.get(s.id) == GATE_SET),
        key=lambda s: s.id,
    )
    unseen = [s for s in members if all(folds.get(s.id, GATE_SET) == GATE_SET for folds in trained_by)]
    return GateSamples(unseen, len(members) - len(unseen))


def predicted_by(
    config: FoldwiseConfig, model: EnsembleModel, samples: list[sample_store.StoredSample]
) -> np.ndarray:
    """The model's probabilities for these samples: those its run recorded for its gate set when it
    has them all (each is predicted once), else predicted now from the image cache."""
    with session_scope(config.resolved_database_url()) as session:
        recorded = queries.gate_set_probabilities(session=session, run_id=model.run_id)
    if samples and all(sample.id in recorded for sample in samples):
        return np.array([recorded[sample.id] for sample in samples], dtype=np.float32)
    size = model_item_size(model)
    images = [CachedImage(s.image_path, s.key, s.content_hash) for s in samples]
    failures = ensure_cached(config, images, [size])
    if failures:  # files gone since the pull and never cached at this size: not a fair comparison
        raise RegistryError(f"cannot read {len(failures)} gate image(s): {next(iter(failures.values()))}")
    store = ImageCache(config, [size]).store(size)
    rows = np.array([store.rows[sample.content_hash] for sample in samples], dtype=np.int64)
    return ensemble_probabilities(model, store.pixels(), rows, device_setting=config.train.device)


def score(config: FoldwiseConfig, model: EnsembleModel, samples: list[sample_store.StoredSample]) -> Scored:
    return Scored(model.run_id, model.vocab, model.thresholds, predicted_by(config, model, samples))


def judge_against_champion(config: FoldwiseConfig, run_id: int, champion_id: int | None) -> Verdict:
    if champion_id is None:
        return Verdict(True, "promoted: the first model")
    gate = gate_samples(config, [run_id, champion_id])
    if not gate.samples:
        why = (
            f"all {gate.excluded} gate-set samples were trained on by one of the models"
            if gate.excluded
            else "no gate set (set gate.fraction or data.fixed_split_column)"
        )
        return Verdict(True, f"promoted without comparison: {why}")
    candidate = score(config, load_model(config, run_id), gate.samples)
    champion = score(config, load_model(config, champion_id), gate.samples)
    verdict = judge(candidate, champion, gate.truth_sets, config.thresholds, config.gate)
    verdict.details["excluded_trained_on"] = gate.excluded
    return verdict


def gate_candidate(config: FoldwiseConfig, run_id: int) -> Verdict:
    """Decide whether the run's ensemble becomes champion, and record the decision. A gate that
    fails is recorded as such (the run's results stay as they are), then the error is raised."""
    url = config.resolved_database_url()
    with session_scope(url) as session:
        champion_id = registry.current_champion(session=session)
    try:
        verdict = judge_against_champion(config, run_id, champion_id)
    except Exception as error:
        with session_scope(url) as session:
            registry.add_decision(
                session=session,
                kind=registry.GATE_FAILED,
                candidate_run_id=run_id,
                champion_before=champion_id,
                champion_after=champion_id,
                promoted=False,
                reason=f"gate failed: {describe_error(error)}",
            )
        raise
    with session_scope(url) as session:
        registry.add_decision(
            session=session,
            kind=registry.GATE,
            candidate_run_id=run_id,
            champion_before=champion_id,
            champion_after=run_id if verdict.promoted else champion_id,
            promoted=verdict.promoted,
            reason=verdict.reason,
            details=verdict.details,
        )
    get_logger(__name__).info("run %d %s", run_id, verdict.reason)
    return verdict


def gate_ungated_runs(config: FoldwiseConfig) -> list[int]:
    """Gate the successful runs whose process died before or during their gate (oldest first).
    A failure is recorded and logged; it does not stop the run that found them."""
    with session_scope(config.resolved_database_url()) as session:
        ungated = registry.ungated_runs(session=session)
    log = get_logger(__name__)
    for run_id in ungated:
        log.warning("run %d recorded its results but was never gated: gating it now", run_id)
        try:
            write_model_record(config, run_id)  # it may have died before writing it
            gate_candidate(config, run_id)
        except Exception as error:
            log.error("gate of run %d failed: %s", run_id, describe_error(error))
    return ungated


def promote(config: FoldwiseConfig, run_id: int, reason: str = "by hand") -> str:
    url = config.resolved_database_url()
    with training_lock(config, "foldwise promote"), session_scope(url) as session:
        run = session.get(Run, run_id)
        if run is None or run.status != "succeeded":
            raise RegistryError(f"run {run_id} is not a successful run: only those have a model")
        load_model(config, run_id)  # its files must be there
        champion = registry.current_champion(session=session)
        if champion == run_id:
            raise RegistryError(f"run {run_id} is already the champion")
        registry.add_decision(
            session=session,
            kind=registry.PROMOTE,
            candidate_run_id=run_id,
            champion_before=champion,
            champion_after=run_id,
            promoted=True,
            reason=f"promoted {reason}",
        )
    return f"run {run_id} is champion (was {champion})"


def rollback(config: FoldwiseConfig, reason: str = "by hand") -> str:
    url = config.resolved_database_url()
    with training_lock(config, "foldwise rollback"), session_scope(url) as session:
        stack = registry.champion_stack(session=session)
        if len(stack) < 2:
            raise RegistryError("nothing to roll back to: there is no earlier champion")
        load_model(config, stack[-2])  # its files must be there (retention may have removed them)
        registry.add_decision(
            session=session,
            kind=registry.ROLLBACK,
            candidate_run_id=None,
            champion_before=stack[-1],
            champion_after=stack[-2],
            promoted=False,
            reason=f"rolled back {reason}: run {stack[-1]} -> run {stack[-2]}",
        )
    return f"run {stack[-2]} is champion again (was {stack[-1]})"
