"""Cached reads of the Foldwise database for the dashboard. Reads only: never creates or migrates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from sqlalchemy import select
from sqlalchemy.engine import make_url

from foldwise import metrics, secrets
from foldwise.config import DataConfig
from foldwise.dashboard import present
from foldwise.db import prequential, queries, registry, samples, training
from foldwise.db.models import Run
from foldwise.db.session import current_revision, head_revision, read_scope
from foldwise.duplicates import Duplicates, describe_group, is_conflicting

DATABASE_URL_ENV = "FOLDWISE_DATABASE_URL"
DEMO_DATABASE = Path(__file__).resolve().parents[1] / "var" / "demo" / "foldwise.db"
TTL_SECONDS = 30  # a run finishing shows up within this (or at once: the sidebar's Refresh)
LIVE_TTL_SECONDS = 5  # what a running run did: its progress, whether it still runs


def database_url() -> str:
    return secrets.resolve(os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{DEMO_DATABASE}")


def shown_url(url: str) -> str:
    """The database's address without its credentials."""
    return make_url(url).render_as_string(hide_password=True)


def may_exist(url: str) -> bool:
    """False for a SQLite file that is not there: looking would create it."""
    parsed = make_url(url)
    return parsed.get_backend_name() != "sqlite" or Path(parsed.database or "").is_file()


@st.cache_data(ttl=TTL_SECONDS)
def schema_revision(url: str) -> str | None:
    """The database's schema revision; None: no schema (or no database) yet."""
    return current_revision(url) if may_exist(url) else None


@st.cache_resource
def expected_revision() -> str:
    """The schema revision this code reads."""
    return head_revision()


@st.cache_data(ttl=TTL_SECONDS)
def decisions(url: str) -> list[dict[str, Any]]:
    """Every champion decision, oldest first."""
    with read_scope(url) as session:
        return [
            {
                "decided_at": d.decided_at,
                "kind": d.kind,
                "candidate_run_id": d.candidate_run_id,
                "champion_before": d.champion_before,
                "champion_after": d.champion_after,
                "promoted": d.promoted,
                "reason": d.reason,
            }
            for d in registry.decisions(session=session)
        ]


@st.cache_data(ttl=TTL_SECONDS)
def champion(url: str) -> int | None:
    with read_scope(url) as session:
        return registry.current_champion(session=session)


@st.cache_data(ttl=TTL_SECONDS)
def runs(url: str) -> pd.DataFrame:
    """Every run, with its outcome (the gate's decision for a successful one) and the champion flagged."""
    with read_scope(url) as session:
        frame = pd.DataFrame(queries.runs_overview(session=session))
    if frame.empty:
        return frame
    frame["duration_s"] = (frame["finished_at"] - frame["started_at"]).dt.total_seconds()
    latest = present.latest_decisions(decisions(url))
    frame["outcome"] = [
        registry.run_outcome(s, latest[i]["kind"], latest[i]["promoted"])
        if i in latest
        else registry.run_outcome(s, None)
        for i, s in zip(frame["id"], frame["status"], strict=True)
    ]
    frame["decision"] = pd.Series(
        [latest[i]["reason"] if i in latest else None for i in frame["id"]], dtype=object
    )
    frame["reason"] = frame["reason"].astype(object).where(frame["reason"].notna(), None)  # None, never NaN
    frame["champion"] = frame["id"] == champion(url)
    frame["metric_name"] = [
        metrics.metric_name(m, b) for m, b in zip(frame["metric"], frame["beta"], strict=True)
    ]
    return frame


def newest_metric_name(runs: pd.DataFrame) -> str:
    """The newest scored run's metric: what score columns and axes are called."""
    scored = runs.dropna(subset=["score_oof"])
    return scored["metric_name"].iloc[-1] if not scored.empty else "score"


@st.cache_data(ttl=LIVE_TTL_SECONDS)
def running_runs(url: str) -> tuple[int, ...]:
    with read_scope(url) as session:
        return tuple(run.id for run in training.running_runs(session=session))


def recorded_as_running(url: str) -> tuple[int, ...]:
    """The runs that the cached runs table holds as running."""
    frame = runs(url)
    return tuple(int(i) for i in frame.loc[frame["status"] == "running", "id"]) if not frame.empty else ()


@st.cache_data(ttl=TTL_SECONDS)
def run_record(url: str, run_id: int) -> dict[str, Any]:
    """A run's row: what it was, how it ended, and where it came from (provenance)."""
    with read_scope(url) as session:
        run = session.get_one(Run, run_id)
        previous = queries.previous_succeeded_run(session=session, run_id=run_id)
        return {
            "id": run.id,
            "status": run.status,
            "reason": run.reason,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "dataset_size": run.dataset_size,
            "dataset_version": run.dataset_version,
            "fold_set_id": run.fold_set_id,
            "pull_id": run.pull_id,
            "vocabulary": run.vocabulary or [],
            "beta": run.beta or run.config.get("thresholds", {}).get("beta", 2.0),
            "config": run.config,
            "seed": run.seed,
            "git_commit": run.git_commit,
            "package_versions": run.package_versions,
            "host": run.host,
            "pid": run.pid,
            "flow_run_id": run.flow_run_id,
            "warm_start_from": run.warm_start_from,
            "notes": run.notes,
            "phase_seconds": run.phase_seconds,
            "threshold_strategy": run.threshold_strategy,
            "threshold_reason": run.threshold_reason,
            "previous_id": previous.id if previous else None,
        }


@st.cache_data(ttl=LIVE_TTL_SECONDS)
def live_progress(url: str, run_id: int) -> tuple[present.Progress, int, float | None]:
    """A running run's progress, its number of epoch rows so far and the age of its last heartbeat in
    seconds, by the database server's clock (which dates heartbeats), not this host's."""
    with read_scope(url) as session:
        run = session.get_one(Run, run_id)
        epochs = queries.epochs(session=session, run_id=run_id)
        finished = [
            {"fold": f.fold, "reused_from_run_id": f.reused_from_run_id}
            for f in training.fold_results(session=session, run_id=run_id)
        ]
        found = present.progress(run.config, run.warm_start_from is not None, epochs, finished)
        if run.heartbeat_at is None:
            return found, len(epochs), None
        age = training.database_now(session=session) - run.heartbeat_at
        return found, len(epochs), age.total_seconds()


@st.cache_data(ttl=TTL_SECONDS)
def epochs(url: str, run_id: int, known_rows: int | None = None) -> pd.DataFrame:
    """A run's learning curves. `known_rows`: how many epoch rows the caller knows a running run has;
    a new count reads them again (the curves of a running run grow faster than the cache expires)."""
    with read_scope(url) as session:
        return pd.DataFrame(queries.epochs(session=session, run_id=run_id))


@st.cache_data(ttl=TTL_SECONDS)
def class_results(url: str, run_id: int, split: str = "oof") -> pd.DataFrame:
    with read_scope(url) as session:
        return pd.DataFrame(queries.class_results(session=session, run_id=run_id, split=split))


@st.cache_data(ttl=TTL_SECONDS)
def run_metrics(url: str, run_ids: tuple[int, ...]) -> pd.DataFrame:
    with read_scope(url) as session:
        return pd.DataFrame(queries.run_metrics(session=session, run_ids=list(run_ids)))


@st.cache_data(ttl=TTL_SECONDS)
def threshold_curve(url: str, run_id: int, label: str) -> list[float]:
    with read_scope(url) as session:
        row = queries.threshold_curve(session=session, run_id=run_id, label=label)
        return list(row.curve) if row else []


@st.cache_data(ttl=TTL_SECONDS)
def fold_label_counts(url: str, fold_set_id: int) -> pd.DataFrame:
    with read_scope(url) as session:
        return pd.DataFrame(queries.fold_label_counts(session=session, fold_set_id=fold_set_id))


@st.cache_data(ttl=TTL_SECONDS)
def data_pulls(url: str) -> pd.DataFrame:
    with read_scope(url) as session:
        return pd.DataFrame(queries.data_pulls(session=session))


@st.cache_data(ttl=TTL_SECONDS)
def prequential_scores(url: str) -> pd.DataFrame:
    """The champion's score on each pull's new samples, oldest first, its own OOF score beside it."""
    with read_scope(url) as session:
        return pd.DataFrame(prequential.scores(session=session))


@st.cache_data(ttl=TTL_SECONDS)
def label_frequencies(url: str) -> pd.Series:
    with read_scope(url) as session:
        return pd.Series(queries.label_frequencies(session=session), name="samples", dtype="int64")


@st.cache_data(ttl=TTL_SECONDS)
def label_cooccurrence(url: str) -> pd.DataFrame:
    """Square matrix: samples carrying both labels; the diagonal holds each label's own count."""
    frequencies = label_frequencies(url)
    matrix = pd.DataFrame(0, index=frequencies.index, columns=frequencies.index, dtype="int64")
    with read_scope(url) as session:
        for first, second, count in queries.label_cooccurrence(session=session):
            matrix.loc[first, second] = count
    for label, count in frequencies.items():
        matrix.loc[label, label] = count
    return matrix


@st.cache_data(ttl=TTL_SECONDS)
def rejected_rows(url: str) -> pd.DataFrame:
    with read_scope(url) as session:
        return pd.DataFrame(queries.rejected_rows(session=session))


@st.cache_data(ttl=TTL_SECONDS)
def inactive_samples(url: str) -> pd.DataFrame:
    with read_scope(url) as session:
        return pd.DataFrame(queries.inactive_samples(session=session))


def near_duplicate_distance(run_config: dict[str, Any] | None) -> int | None:
    """The perceptual-hash distance the folds group by, as the newest run was configured (the
    defaults before any run); None: near duplicates off, exact copies only."""
    section = (run_config or {}).get("data", {})
    defaults = DataConfig.model_fields
    if not section.get("near_duplicates", defaults["near_duplicates"].default):
        return None
    return section.get("near_duplicate_distance", defaults["near_duplicate_distance"].default)


@st.cache_data(ttl=TTL_SECONDS)
def duplicate_groups(url: str) -> dict[str, Any]:
    """The data set's duplicate groups, as the folds group them: their counts, and a table of the
    groups (conflicting labels first)."""
    with read_scope(url) as session:
        active = sorted(
            samples.stored_samples(session=session, active_only=True).values(), key=lambda s: s.id
        )
        newest_config = session.scalar(select(Run.config).order_by(Run.id.desc()).limit(1))
    groups = Duplicates.of(active, near_duplicate_distance(newest_config)).groups
    groups.sort(key=lambda group: not is_conflicting(group))  # stable: otherwise in order of first member
    table = pd.DataFrame(
        {
            "conflicting labels": [is_conflicting(group) for group in groups],
            "samples": [len(group) for group in groups],
            "members (labels)": [describe_group(group) for group in groups],
        }
    )
    return {
        "groups": len(groups),
        "samples": sum(len(group) for group in groups),
        "conflicting": sum(is_conflicting(group) for group in groups),
        "table": table,
    }


@st.cache_data(ttl=TTL_SECONDS)
def samples_with_label(url: str, label: str | None, limit: int) -> list[dict[str, Any]]:
    with read_scope(url) as session:
        return queries.samples_with_label(session=session, label=label, limit=limit)


@st.cache_data(ttl=TTL_SECONDS)
def run_predictions(url: str, run_id: int) -> list[dict[str, Any]]:
    with read_scope(url) as session:
        return queries.run_predictions(session=session, run_id=run_id)


@st.cache_data(ttl=TTL_SECONDS)
def oof_scores(url: str, run_id: int, vocabulary: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A run's out-of-fold probabilities and the samples' labels as a boolean matrix (rows: samples,
    columns: the run's vocabulary)."""
    predictions = run_predictions(url, run_id)
    probabilities = np.array([p["probabilities"] for p in predictions], dtype=float).reshape(
        -1, len(vocabulary)
    )
    truth = np.array(
        [[label in p["labels"] for label in vocabulary] for p in predictions], dtype=bool
    ).reshape(-1, len(vocabulary))
    return probabilities, truth
