"""Put the folds together: out-of-fold predictions -> thresholds -> metrics -> one transaction in the DB."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foldwise import metrics
from foldwise.config import FoldwiseConfig, ThresholdConfig
from foldwise.db import samples as sample_store
from foldwise.db import training as training_store
from foldwise.db.folds import GATE_SET
from foldwise.db.session import session_scope
from foldwise.tasks.ensemble import forget_unfinished_folds, write_model_record
from foldwise.tasks.evaluate import Evaluation, evaluate
from foldwise.tasks.fold_records import FoldOutput
from foldwise.tasks.ingest import PullSummary
from foldwise.tasks.logs import get_logger
from foldwise.tasks.runs import RunSummary
from foldwise.tasks.thresholds import Thresholds, baselines, choose_thresholds


@dataclass(frozen=True)
class EnsemblePredictions:
    vocab: list[str]
    oof_ids: np.ndarray
    oof_folds: np.ndarray
    oof: np.ndarray
    gate_set_ids: np.ndarray
    gate_set: np.ndarray  # mean of the folds' probabilities


# Keys of the gate set in fold prediction files written before it had that name (reused folds keep them).
KEYS_BEFORE_GATE_SET = {"holdout_ids": "gate_set_ids", "holdout": "gate_set"}


def read_fold_predictions(path: Path) -> dict[str, np.ndarray]:
    """A fold's prediction file, by today's key names whatever its age."""
    with np.load(path) as stored:
        return {KEYS_BEFORE_GATE_SET.get(key, key): stored[key] for key in stored.files}


def gather(outputs: list[FoldOutput]) -> EnsemblePredictions:
    outputs = sorted(outputs, key=lambda o: o.fold)
    files = [read_fold_predictions(output.predictions_path) for output in outputs]
    vocab = files[0]["vocab"].tolist()
    return EnsemblePredictions(
        vocab=vocab,
        oof_ids=np.concatenate([f["oof_ids"] for f in files]),
        oof_folds=np.concatenate(
            [np.full(len(f["oof_ids"]), o.fold) for f, o in zip(files, outputs, strict=True)]
        ),
        # Rounded as they are stored: thresholds, metrics and the stored rows agree sample for sample.
        oof=np.concatenate([f["oof"] for f in files]).astype(np.float64).round(5),
        gate_set_ids=files[0]["gate_set_ids"],
        gate_set=np.mean([f["gate_set"] for f in files], axis=0).astype(np.float64).round(5),
    )


def truth_for(config: FoldwiseConfig, ids: np.ndarray, vocab: list[str]) -> np.ndarray:
    with session_scope(config.resolved_database_url()) as session:
        labels_of = {s.id: s.labels for s in sample_store.stored_samples(session=session).values()}
    column = {label: index for index, label in enumerate(vocab)}
    truth = np.zeros((len(ids), len(vocab)), dtype=np.int8)
    for row, sample_id in enumerate(ids.tolist()):
        truth[row, [column[label] for label in labels_of[sample_id] if label in column]] = 1
    return truth


def split_scores(
    split: str,
    probabilities: np.ndarray,
    truth: np.ndarray,
    thresholds: Thresholds,
    settings: ThresholdConfig,
) -> dict[str, float | str | None]:
    """The configured metric on a split: honest (cross-fitted out of fold; plain on the gate set, which
    no threshold saw), in-sample out of fold, and what doing nothing scores on the same samples."""
    baseline = baselines(truth, settings)
    honest = (
        thresholds.score
        if split == "oof"
        else metrics.score(probabilities >= thresholds.vector(), truth, settings)
    )
    return {
        "metric": settings.metric,
        "score": honest,
        "score_in_sample": thresholds.in_sample if split == "oof" else None,
        "baseline_all": baseline["predict every label"],
        "baseline_prior": baseline["predict by label priors"],
    }


def record_results(
    config: FoldwiseConfig,
    run_id: int,
    pull: PullSummary,
    fold_set_id: int,
    outputs: list[FoldOutput],
    reason: str,
) -> RunSummary:
    """`reason`: why the run trained (the decision), kept with the run."""
    log = get_logger(__name__)
    settings = config.thresholds
    ensemble = gather(outputs)
    oof_truth = truth_for(config, ensemble.oof_ids, ensemble.vocab)
    thresholds = choose_thresholds(ensemble.oof, oof_truth, ensemble.oof_folds, ensemble.vocab, settings)
    evaluations: dict[str, tuple[Evaluation, float, dict]] = {}
    for split, ids, probabilities in (
        ("oof", ensemble.oof_ids, ensemble.oof),
        ("gate_set", ensemble.gate_set_ids, ensemble.gate_set),
    ):
        if len(ids):
            truth = oof_truth if split == "oof" else truth_for(config, ids, ensemble.vocab)
            at_global = metrics.fbeta(
                probabilities >= thresholds.global_threshold, truth, settings.beta, "samples"
            )
            evaluations[split] = (
                evaluate(probabilities, truth, thresholds.vector(), ensemble.vocab, settings.beta),
                float(at_global),
                split_scores(split, probabilities, truth, thresholds, settings),
            )
    prediction_rows = [
        {"sample_id": int(i), "split": "oof", "fold": int(f), "probabilities": p.round(5).tolist()}
        for i, f, p in zip(ensemble.oof_ids, ensemble.oof_folds, ensemble.oof, strict=True)
    ] + [
        {"sample_id": int(i), "split": "gate_set", "fold": GATE_SET, "probabilities": p.round(5).tolist()}
        for i, p in zip(ensemble.gate_set_ids, ensemble.gate_set, strict=True)
    ]
    with session_scope(config.resolved_database_url()) as session:  # all of it, or none of it
        training_store.add_predictions(session=session, run_id=run_id, rows=prediction_rows)
        training_store.add_thresholds(session=session, run_id=run_id, thresholds=thresholds.classes)
        for split, (evaluation, at_global, scores) in evaluations.items():
            training_store.add_metrics(
                session=session,
                run_id=run_id,
                split=split,
                overall=evaluation.overall,
                classes=evaluation.classes,
                fbeta_samples_global=at_global,
                scores=scores,
            )
        training_store.finish_run(
            session=session,
            run_id=run_id,
            status=training_store.SUCCEEDED,
            reason=reason,
            pull_id=pull.pull_id,
            fold_set_id=fold_set_id,
            dataset_version=pull.dataset_version,
            dataset_size=pull.dataset_size,
            vocabulary=ensemble.vocab,
            beta=settings.beta,
            global_threshold=thresholds.global_threshold,
            threshold_strategy=thresholds.strategy,
            threshold_reason=thresholds.reason,
        )
    write_model_record(config, run_id)  # published only once its rows are committed
    forgotten = forget_unfinished_folds(config, before_run=run_id)
    if forgotten:
        log.info("deleted %d fold(s) that earlier unfinished runs had left for reuse", forgotten)
    oof = evaluations["oof"][2]
    log.info(
        "run %d: OOF %s %.4f cross-fitted (%.4f in-sample; predicting every label scores %.4f, by priors %.4f); %s",
        run_id,
        metrics.name(settings),
        oof["score"],
        oof["score_in_sample"],
        oof["baseline_all"],
        oof["baseline_prior"],
        thresholds.reason,
    )
    for fallback in (c for c in thresholds.classes if c.fallback):
        log.warning(
            "class %s has %d OOF positives (< %d): keeps the global threshold",
            fallback.label,
            fallback.positives,
            settings.min_positives,
        )
    gate_set = evaluations.get("gate_set")
    return RunSummary(
        run_id,
        training_store.SUCCEEDED,
        reason,
        oof["score"],
        gate_set[2]["score"] if gate_set else None,
        metric=metrics.name(settings),
    )
