"""Dashboard render time on a big history: 1,000 runs x 20 classes x 5 folds x 20 epochs (SQLite).

Each page is rendered with Streamlit's AppTest, cold (query caches cleared) and warm. Baseline,
measured in the same run: the same pages on a database holding a single run. Printed: seconds
per render and the ratio to the baseline.

    python benchmarks/bench_dashboard.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import streamlit as st
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from foldwise.db.models import (
    ClassMetric,
    ClassThreshold,
    DataPull,
    Epoch,
    FoldLabelCount,
    FoldSet,
    Label,
    Run,
    RunMetric,
    utcnow,
)
from foldwise.db.session import ensure_schema, session_scope

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
N_CLASSES, N_FOLDS, N_EPOCHS = 20, 5, 20


def fill(url: str, n_runs: int) -> None:
    rng = np.random.default_rng(0)
    labels = [f"label_{i:02d}" for i in range(N_CLASSES)]
    start = utcnow() - timedelta(days=n_runs)
    ensure_schema(url)
    with session_scope(url) as session:
        session.execute(insert(Label), [{"id": i + 1, "name": name} for i, name in enumerate(labels)])
        for run_id in range(1, n_runs + 1):
            when = start + timedelta(days=run_id)
            size = 1000 + 10 * run_id
            session.execute(
                insert(DataPull),
                [
                    {
                        "id": run_id,
                        "started_at": when,
                        "source": "/data",
                        "n_added": 10,
                        "dataset_version": f"v{run_id}",
                        "dataset_size": size,
                    }
                ],
            )
            session.execute(
                insert(FoldSet),
                [
                    {
                        "id": run_id,
                        "strategy": "extend",
                        "n_folds": N_FOLDS,
                        "seed": 42,
                        "dataset_version": f"v{run_id}",
                        "n_samples": size,
                        "n_gate_set": 0,
                        "warnings": [],
                    }
                ],
            )
            session.execute(
                insert(Run),
                [
                    {
                        "id": run_id,
                        "started_at": when,
                        "finished_at": when + timedelta(minutes=50),
                        "status": "succeeded",
                        "reason": "data changed",
                        "config": {"thresholds": {"beta": 2.0}},
                        "seed": 42,
                        "dataset_size": size,
                        "dataset_version": f"v{run_id}",
                        "pull_id": run_id,
                        "fold_set_id": run_id,
                        "package_versions": {},
                        "vocabulary": labels,
                        "beta": 2.0,
                        "global_threshold": 0.3,
                    }
                ],
            )
        session.flush()
        epochs, thresholds, classes, metrics, counts = [], [], [], [], []
        for run_id in range(1, n_runs + 1):
            for fold in range(N_FOLDS):
                for epoch in range(N_EPOCHS):
                    epochs.append(
                        {
                            "run_id": run_id,
                            "fold": fold,
                            "stage": epoch // 10,
                            "size": 128 if epoch < 10 else 256,
                            "epoch": epoch % 10,
                            "train_loss": 0.3,
                            "valid_loss": 0.25,
                            "accuracy_multi": 0.9,
                            "fbeta": float(rng.random()),
                            "seconds": 60.0,
                        }
                    )
                counts += [
                    {"fold_set_id": run_id, "fold": fold, "label_id": i + 1, "count": 40}
                    for i in range(N_CLASSES)
                ]
            for label in labels:
                curve = np.round(rng.random(101), 4).tolist()
                thresholds.append(
                    {
                        "run_id": run_id,
                        "label": label,
                        "threshold": 0.2,
                        "fbeta": 0.8,
                        "positives": 50,
                        "fallback": False,
                        "curve": curve,
                    }
                )
                classes.append(
                    {
                        "run_id": run_id,
                        "split": "oof",
                        "label": label,
                        "support": 50,
                        "precision": 0.7,
                        "recall": 0.9,
                        "f1": 0.8,
                        "fbeta": float(rng.random()),
                        "average_precision": 0.8,
                    }
                )
            score = float(rng.random())
            metrics.append(
                {
                    "run_id": run_id,
                    "split": "oof",
                    "metric": "fbeta_samples",
                    "score": score,
                    "score_in_sample": score,
                    "baseline_all": 0.3,
                    "baseline_prior": 0.4,
                    "n_samples": 1000,
                    "fbeta_samples": score,
                    "fbeta_samples_global": 0.8,
                    "f1_macro": 0.7,
                    "mean_average_precision": 0.8,
                    "accuracy_multi": 0.9,
                }
            )
        for table, rows in (
            (Epoch, epochs),
            (ClassThreshold, thresholds),
            (ClassMetric, classes),
            (RunMetric, metrics),
            (FoldLabelCount, counts),
        ):
            for begin in range(0, len(rows), 20_000):
                session.execute(insert(table), rows[begin : begin + 20_000])


def quiet_streamlit() -> None:
    """Bare-mode AppTest logs lines per render about the missing Streamlit runtime."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.ERROR)


def render_seconds(url: str, page: str, cold: bool) -> float:
    quiet_streamlit()
    os.environ["FOLDWISE_DATABASE_URL"] = url
    if cold:
        st.cache_data.clear()
    started = time.perf_counter()
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["page"] = page
    app.run()
    assert not app.exception, app.exception
    return time.perf_counter() - started


def median_render(url: str, page: str, cold: bool, repeats: int = 3) -> float:
    render_seconds(url, page, cold=False)  # imports and the first connection are not the page's cost
    return float(np.median([render_seconds(url, page, cold) for _ in range(repeats)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        small, big = f"sqlite:///{folder}/one.db", f"sqlite:///{folder}/big.db"
        started = time.perf_counter()
        fill(small, 1)
        fill(big, args.runs)
        print(
            f"filled {args.runs} runs x {N_CLASSES} classes x {N_FOLDS} folds x {N_EPOCHS} epochs in {time.perf_counter() - started:.0f}s"
        )
        print(f"{'page':<12} {'cache':<5} {'1 run (s)':>10} {f'{args.runs} runs (s)':>14} {'ratio':>7}")
        for page in ("Overview", "Runs", "Run detail", "Compare"):
            for cold in (True, False):
                baseline, measured = median_render(small, page, cold), median_render(big, page, cold)
                print(
                    f"{page:<12} {'cold' if cold else 'warm':<5} {baseline:>10.3f} {measured:>14.3f} {measured / baseline:>7.2f}"
                )


if __name__ == "__main__":
    main()
