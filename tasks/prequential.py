"""The prequential score: the champion predicts a pull's new labeled samples before any model trains on
them, the honest estimate of how the deployed model does in the field.

Per pull: the configured metric (`thresholds.metric`) with the champion's own thresholds, per-class
support, precision, recall, F1 and F-beta, and the label-frequency shift of the pull (each label's share
of the new samples against its share of the rest of the data set). A score worse than the champion's
out-of-fold score by more than `alerts.prequential_drop` alerts.

Only samples a pull added count: a sample whose labels or image changed keeps a key (and often an
image) the champion trained on. A run scores every pull since the champion's own that no champion
scored yet: its own, and those of `foldwise ingest` since the last run, each with its own record (which
names the champion that scored the pull's samples). Labels the champion does not know count as never
predicted. Best effort: a failure is a warning in the log and the run goes on to train; each pull's
record is one transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from foldwise import metrics
from foldwise.config import FoldwiseConfig
from foldwise.db import prequential as prequential_store
from foldwise.db import registry as registry_store
from foldwise.db import samples as sample_store
from foldwise.db.session import session_scope
from foldwise.tasks import alerts
from foldwise.tasks.ensemble import EnsembleModel, load_model
from foldwise.tasks.evaluate import evaluate
from foldwise.tasks.ingest import PullSummary
from foldwise.tasks.logs import get_logger
from foldwise.tasks.registry import predicted_by
from foldwise.tasks.runs import describe_error


@dataclass(frozen=True)
class ClassScore:
    label: str
    known: bool  # in the champion's vocabulary (an unknown label is never predicted)
    support: int
    precision: float
    recall: float
    f1: float
    fbeta: float


@dataclass(frozen=True)
class PrequentialScore:
    pull_id: int
    champion_run_id: int
    metric: str  # how reports call it: 'F2 (samples)'
    score: float
    n_samples: int
    classes: list[ClassScore]
    label_shift: dict[str, dict[str, float]]


def label_shift(new: Sequence[frozenset[str]], rest: Sequence[frozenset[str]]) -> dict[str, dict[str, float]]:
    """Each label's share of the new samples and of the rest of the data set (0 where there are none)."""
    new_counts = Counter(label for labels in new for label in labels)
    rest_counts = Counter(label for labels in rest for label in labels)
    return {
        label: {
            "new": new_counts[label] / len(new) if new else 0.0,
            "before": rest_counts[label] / len(rest) if rest else 0.0,
        }
        for label in sorted(new_counts.keys() | rest_counts.keys())
    }


def score_pull(
    config: FoldwiseConfig, run_id: int, pull_id: int, champion: EnsembleModel
) -> PrequentialScore:
    """Score the champion on the samples `pull_id` added (still in the data set), and record it."""
    url = config.resolved_database_url()
    with session_scope(url) as session:
        added = set(prequential_store.added_sample_ids(session=session, pull_id=pull_id))
        samples = sample_store.stored_samples(session=session, active_only=True)
    new = sorted((s for s in samples.values() if s.id in added), key=lambda s: s.id)
    rest = [s.labels for s in samples.values() if s.id not in added]
    unknown = sorted({label for s in new for label in s.labels} - set(champion.vocab))
    labels = [*champion.vocab, *unknown]
    # Unknown labels: probability 0 against a threshold of 1, never predicted.
    probabilities = np.zeros((len(new), len(labels)), dtype=np.float32)
    probabilities[:, : len(champion.vocab)] = predicted_by(config, champion, new)
    thresholds = np.concatenate([champion.thresholds, np.ones(len(unknown))])
    truth = np.array([[label in s.labels for label in labels] for s in new], dtype=bool)
    score = metrics.score(probabilities >= thresholds, truth, config.thresholds)
    per_class = evaluate(probabilities, truth, thresholds, labels, config.thresholds.beta).classes
    result = PrequentialScore(
        pull_id=pull_id,
        champion_run_id=champion.run_id,
        metric=metrics.name(config.thresholds),
        score=score,
        n_samples=len(new),
        classes=[
            ClassScore(c.label, c.label not in unknown, c.support, c.precision, c.recall, c.f1, c.fbeta)
            for c in per_class
        ],
        label_shift=label_shift([s.labels for s in new], rest),
    )
    with session_scope(url) as session:
        prequential_store.add_score(
            session=session,
            pull_id=pull_id,
            run_id=run_id,
            champion_run_id=champion.run_id,
            metric=config.thresholds.metric,
            beta=config.thresholds.beta,
            score=score,
            n_samples=len(new),
            classes=[asdict(c) for c in result.classes],
            label_shift=result.label_shift,
        )
    get_logger(__name__).info(
        "prequential score of pull %d: champion run %d scored %s %.4f on its %d new labeled samples",
        pull_id,
        champion.run_id,
        result.metric,
        score,
        len(new),
    )
    return result


def score_unscored_pulls(config: FoldwiseConfig, run_id: int, pull: PullSummary) -> list[PrequentialScore]:
    """The champion scores each pull since its own whose new samples no champion scored: the run's
    `pull`, and those `foldwise ingest` made since the last run. Nothing without a champion."""
    log = get_logger(__name__)
    with session_scope(config.resolved_database_url()) as session:
        champion_id = registry_store.current_champion(session=session)
        if champion_id is None:
            log.info("no prequential score for pull %d: no champion yet", pull.pull_id)
            return []
        pull_ids = prequential_store.unscored_pulls(
            session=session, champion_run_id=champion_id, up_to_pull_id=pull.pull_id
        )
    if not pull_ids:
        log.info(
            "no prequential score for pull %d: no pull since champion run %d added a labeled sample "
            "that is not scored yet",
            pull.pull_id,
            champion_id,
        )
        return []
    champion = load_model(config, champion_id)
    return [score_pull(config, run_id, pull_id, champion) for pull_id in pull_ids]


def alert_on_drop(config: FoldwiseConfig, result: PrequentialScore) -> None:
    """Send the prequential-drop alert when the score calls for it. Never raises."""
    if not (config.alerts.apprise_urls or config.alerts.prefect_blocks):
        return
    try:
        alert = alerts.prequential_alert(
            config, result.pull_id, result.n_samples, result.score, result.champion_run_id
        )
    except Exception as error:  # the database went away: the score is recorded, the alert is not worth a run
        get_logger(__name__).warning(
            "prequential alert of pull %d not sent: %s", result.pull_id, describe_error(error)
        )
        return
    if alert is not None:
        alerts.send(config, alert)


def score_new_samples(config: FoldwiseConfig, run_id: int, pull: PullSummary) -> list[PrequentialScore]:
    """The run's step after the pull: score, record, alert. Never raises: training goes on."""
    try:
        results = score_unscored_pulls(config, run_id, pull)
    except Exception as error:  # any failure: the field score is worth a warning, not the run
        get_logger(__name__).warning(
            "prequential score of pull %d not recorded: %s (the run goes on)",
            pull.pull_id,
            describe_error(error),
        )
        return []
    for result in results:
        alert_on_drop(config, result)
    return results
