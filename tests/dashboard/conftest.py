"""Databases for the dashboard's tests: one filled by really running the tiny flow, and a copy of it
where runs of every other outcome (failed, gate-failed, rejected, running) were recorded through db/."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness
from streamlit.testing.v1 import AppTest

from foldwise.config import load_config
from foldwise.db import registry, training
from foldwise.db.models import Run
from foldwise.db.session import session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.demo import deliver_drop
from tests.conftest import CONFIGS, TINY_TRAINING

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
# The second run is promoted whatever its tiny model scores on the gate (chance, at this size): the
# pages' tests record their gate rejections themselves.
TINY = [*TINY_TRAINING, "thresholds.min_positives=2", "gate.tolerance=1.0", "gate.max_class_drop=1.0"]
FLOW_RUN_ID = "6de90135-b088-4903-a474-a236978f8084"
# Run ids in the operator database: 1-3 from the flow, then these, recorded through db/.
FAILED_RUN, GATE_FAILED_RUN, REJECTED_RUN, RUNNING_RUN = 4, 5, 6, 7


@pytest.fixture(scope="session")
def filled_database(tmp_path_factory) -> str:
    """Two successful runs (the second after a new drop with one bad row), then a skipped run."""
    home = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{home / 'foldwise.db'}"
    config = load_config(
        CONFIGS / "demo.toml",
        [f"source.path={home / 'source'}", f"data_home={home}", f"database_url={url}", *TINY],
    )
    with prefect_test_harness(server_startup_timeout=120):
        deliver_drop(config.source.path, n_images=40)
        assert retrain(config).status == "succeeded"
        drop = deliver_drop(config.source.path, n_images=12)
        with drop.label_file.open("a") as labels:
            labels.write("no_such_image,one\n")
        assert retrain(config).status == "succeeded"
        assert retrain(config).status == "skipped"
    return url


def copy_database(url: str, folder: Path) -> str:
    """A consistent copy of a SQLite database (WAL included), through SQLite's backup."""
    target = folder / "copy.db"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return f"sqlite:///{target}"


def record_operator_runs(url: str) -> None:
    """After the flow's runs: a failed run, a gate that failed, a rejected run and a running run whose
    fold 0 was reused from the failed run and whose fold 1 finished its first stage."""
    with session_scope(url) as session:
        config = session.get_one(Run, 2).config
        champion = registry.current_champion(session=session)

        def new_run(flow_run_id: str | None = None) -> int:
            return training.create_run(
                session=session,
                config=config,
                seed=42,
                package_versions={"torch": "2.5.1", "fastai": "2.8.2"},
                git_commit="0123456789abcdef",
                host="trainer-1",
                pid=4242,
                flow_run_id=flow_run_id,
            )

        assert new_run() == FAILED_RUN
        training.finish_run(
            session=session, run_id=FAILED_RUN, status="failed", reason="fold 0 timed out after 1 minutes"
        )
        for run_id, kind, reason in (
            (GATE_FAILED_RUN, registry.GATE_FAILED, "gate failed: cannot read 1 gate image(s)"),
            (REJECTED_RUN, registry.GATE, f"rejected: gate F2 0.1000 vs champion run {champion} 0.9000"),
        ):
            assert new_run() == run_id
            training.finish_run(
                session=session, run_id=run_id, status="succeeded", reason="forced", dataset_size=52
            )
            registry.add_decision(
                session=session,
                kind=kind,
                candidate_run_id=run_id,
                champion_before=champion,
                champion_after=champion,
                promoted=False,
                reason=reason,
            )
        assert new_run(FLOW_RUN_ID) == RUNNING_RUN
        training.add_fold_result(
            session=session,
            run_id=RUNNING_RUN,
            fold=0,
            n_train=20,
            n_valid=20,
            seconds=3.0,
            weights_path="fold0.safetensors",
            reused_from_run_id=FAILED_RUN,
        )
        for fold, stage, size, loss in ((0, 0, 16, 0.7), (0, 1, 32, 0.6), (1, 0, 16, 0.65)):
            training.add_epoch(
                session=session,
                run_id=RUNNING_RUN,
                fold=fold,
                stage=stage,
                size=size,
                epoch=0,
                values={"train_loss": loss, "valid_loss": loss + 0.1, "fbeta_score": 0.5},
                seconds=1.0,
            )


@pytest.fixture(scope="session")
def operator_database(filled_database, tmp_path_factory) -> str:
    url = copy_database(filled_database, tmp_path_factory.mktemp("operator"))
    record_operator_runs(url)
    return url


def open_app(monkeypatch, url: str, page: str | None = None) -> AppTest:
    monkeypatch.setenv("FOLDWISE_DATABASE_URL", url)
    app = AppTest.from_file(APP, default_timeout=60)
    if page:
        app.session_state["page"] = page
    app.run()
    assert not app.exception, app.exception
    return app


def chart(app: AppTest, key: str) -> dict:
    """The plotly figure of a chart, with plotly's base64 typed arrays decoded to lists."""

    def decode(node):
        if isinstance(node, dict) and "bdata" in node:
            return np.frombuffer(base64.b64decode(node["bdata"]), dtype=node["dtype"]).tolist()
        if isinstance(node, dict):
            return {k: decode(v) for k, v in node.items()}
        if isinstance(node, list):
            return [decode(v) for v in node]
        return node

    for element in app.get("plotly_chart"):
        if key in element.proto.id:
            return decode(json.loads(element.proto.spec))
    raise AssertionError(f"no chart {key}")


def charts(app: AppTest) -> list[str]:
    return [element.proto.id for element in app.get("plotly_chart")]


def table(app: AppTest, column: str) -> pd.DataFrame:
    """The first table with this column (or index entry) among the page's dataframes."""
    for element in app.dataframe:
        frame = element.value
        if column in frame.columns or column in frame.index:
            return frame
    raise AssertionError(f"no table with {column}")
