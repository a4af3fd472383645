"""Cached reads of the Foldwise database for the dashboard. Reads only: never creates or migrates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import make_url

from db import queries, registry
from db.models import Run
from db.session import current_revision, read_scope
from foldwise import secrets

DATABASE_URL_ENV = "FOLDWISE_DATABASE_URL"
DEMO_DATABASE = Path(__file__).resolve().parents[1] / "var" / "demo" / "foldwise.db"
TTL_SECONDS = 30  # a run finishing shows up within this


def database_url() -> str:
    return secrets.resolve(os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{DEMO_DATABASE}")


def shown_url(url: str) -> str:
    """The database's address without its credentials."""
    return make_url(url).render_as_string(hide_password=True)


@st.cache_data(ttl=TTL_SECONDS)
def has_schema(url: str) -> bool:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return False  # do not create an empty file by looking
    return current_revision(url) is not None


@st.cache_data(ttl=TTL_SECONDS)
def runs(url: str) -> pd.DataFrame:
    with read_scope(url) as session:
        frame = pd.DataFrame(queries.runs_overview(session=session))
    if frame.empty:
        return frame
    frame["duration_s"] = (frame["finished_at"] - frame["started_at"]).dt.total_seconds()
    return frame


@st.cache_data(ttl=TTL_SECONDS)
def champion(url: str) -> int | None:
    with read_scope(url) as session:
        return registry.current_champion(session=session)


@st.cache_data(ttl=TTL_SECONDS)
def run_record(url: str, run_id: int) -> dict[str, Any]:
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
            "fold_set_id": run.fold_set_id,
            "vocabulary": run.vocabulary or [],
            "beta": run.beta or run.config.get("thresholds", {}).get("beta", 2.0),
            "config": run.config,
            "previous_id": previous.id if previous else None,
        }


@st.cache_data(ttl=TTL_SECONDS)
def epochs(url: str, run_id: int) -> pd.DataFrame:
    with read_scope(url) as session:
        return pd.DataFrame(queries.epochs(session=session, run_id=run_id))


@st.cache_data(ttl=TTL_SECONDS)
def class_results(url: str, run_id: int) -> pd.DataFrame:
    with read_scope(url) as session:
        return pd.DataFrame(queries.class_results(session=session, run_id=run_id))


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


@st.cache_data(ttl=TTL_SECONDS)
def samples_with_label(url: str, label: str | None, limit: int) -> list[dict[str, Any]]:
    with read_scope(url) as session:
        return queries.samples_with_label(session=session, label=label, limit=limit)


@st.cache_data(ttl=TTL_SECONDS)
def run_predictions(url: str, run_id: int) -> list[dict[str, Any]]:
    with read_scope(url) as session:
        return queries.run_predictions(session=session, run_id=run_id)
