"""Data access for prequential scores: which samples a pull brought, which pulls no champion scored yet,
and the champion's score on them (one row per pull: it names the champion that scored the pull's samples)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from foldwise.db.models import ACTIVE, PrequentialScore, Run, RunMetric, Sample, SampleEvent
from foldwise.db.samples import ADDED


def added_sample_ids(*, session: Session, pull_id: int) -> list[int]:
    """The samples this pull added that are still in the data set, in id order."""
    return list(
        session.scalars(
            select(SampleEvent.sample_id)
            .join(Sample, Sample.id == SampleEvent.sample_id)
            .where(SampleEvent.pull_id == pull_id, SampleEvent.kind == ADDED, Sample.status == ACTIVE)
            .order_by(SampleEvent.sample_id)
        )
    )


def unscored_pulls(*, session: Session, champion_run_id: int, up_to_pull_id: int) -> list[int]:
    """The pulls after the champion's own (so its training never saw their samples), up to this one,
    that added samples still in the data set and have no score yet: a run's pull, and those of
    `foldwise ingest` since the last run. Each sample is scored once, with its pull's row."""
    champion_pull = session.scalar(select(Run.pull_id).where(Run.id == champion_run_id)) or 0
    return list(
        session.scalars(
            select(SampleEvent.pull_id)
            .distinct()
            .join(Sample, Sample.id == SampleEvent.sample_id)
            .where(
                SampleEvent.kind == ADDED,
                Sample.status == ACTIVE,
                SampleEvent.pull_id > champion_pull,
                SampleEvent.pull_id <= up_to_pull_id,
                SampleEvent.pull_id.not_in(select(PrequentialScore.pull_id)),
            )
            .order_by(SampleEvent.pull_id)
        )
    )


def add_score(
    *,
    session: Session,
    pull_id: int,
    run_id: int,
    champion_run_id: int,
    metric: str,
    beta: float,
    score: float,
    n_samples: int,
    classes: list[dict[str, Any]],
    label_shift: dict[str, dict[str, float]],
) -> int:
    row = PrequentialScore(
        pull_id=pull_id,
        run_id=run_id,
        champion_run_id=champion_run_id,
        metric=metric,
        beta=beta,
        score=score,
        n_samples=n_samples,
        classes=classes,
        label_shift=label_shift,
    )
    session.add(row)
    session.flush()
    return row.id


def scores(*, session: Session) -> list[dict[str, Any]]:
    """Every prequential score, oldest first, with the champion's own out-of-fold score beside it."""
    champion_oof = aliased(RunMetric)
    rows = session.execute(
        select(PrequentialScore, champion_oof.score)
        .outerjoin(
            champion_oof,
            (champion_oof.run_id == PrequentialScore.champion_run_id) & (champion_oof.split == "oof"),
        )
        .order_by(PrequentialScore.id)
    )
    return [
        {
            "id": row.id,
            "created_at": row.created_at,
            "pull_id": row.pull_id,
            "run_id": row.run_id,
            "champion_run_id": row.champion_run_id,
            "metric": row.metric,
            "beta": row.beta,
            "score": row.score,
            "n_samples": row.n_samples,
            "classes": row.classes,
            "label_shift": row.label_shift,
            "champion_score_oof": oof,
        }
        for row, oof in rows
    ]
