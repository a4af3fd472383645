"""The dashboard with Streamlit's AppTest, on a database filled by really running the tiny flow."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import registry
from db.models import ClassThreshold, Prediction, RejectedRow, Run, RunMetric, Sample
from db.session import session_scope
from flows.retrain import retrain
from foldwise.config import load_config
from tasks.demo import deliver_drop
from tests.conftest import CONFIGS, TINY_TRAINING

pytestmark = pytest.mark.slow
APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
TINY = [*TINY_TRAINING, "thresholds.min_positives=2"]


@pytest.fixture(scope="module")
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


def open_app(monkeypatch, url: str, page: str | None = None) -> AppTest:
    monkeypatch.setenv("FOLDWISE_DATABASE_URL", url)
    app = AppTest.from_file(APP, default_timeout=60).run()
    if page:
        app.sidebar.radio(key="page").set_value(page).run()
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


def test_an_empty_database_gets_a_friendly_page_and_is_not_created(monkeypatch, tmp_path):
    path = tmp_path / "none.db"
    for page in ("Overview", "Runs", "Run detail", "Data", "Predictions"):
        app = open_app(monkeypatch, f"sqlite:///{path}", page)
        assert "No runs yet" in app.info[0].value and "foldwise run" in app.info[0].value
    assert not path.exists()


def test_overview_shows_the_champion_and_the_last_run(monkeypatch, filled_database):
    with session_scope(filled_database) as session:
        scores = {
            m.run_id: m.fbeta_samples
            for m in session.scalars(select(RunMetric).where(RunMetric.split == "oof"))
        }
        last = session.scalar(select(Run).order_by(Run.id.desc()))
        best = registry.current_champion(session=session)
    app = open_app(monkeypatch, filled_database)
    metrics = {m.label: m.value for m in app.metric}
    assert best in scores and metrics[f"Champion: run {best}"] == f"OOF F2 {scores[best]:.4f}"
    assert metrics[f"Last run: run {last.id}"] == "skipped" and last.reason in app.caption.values
    series = chart(app, "fbeta_over_time")["data"]
    assert series[0]["y"] == pytest.approx([scores[1], scores[2]]) and series[1]["y"] == pytest.approx(
        [scores[best]]
    )
    assert chart(app, "size_over_time")["data"][0]["y"] == [40, 52, 52]


def test_runs_table_filters_and_opens_a_run(monkeypatch, filled_database):
    app = open_app(monkeypatch, filled_database, "Runs")
    table = app.dataframe[0].value
    assert table["id"].tolist() == [3, 2, 1] and table["status"].tolist() == [
        "skipped",
        "succeeded",
        "succeeded",
    ]
    app.multiselect(key="status_filter").set_value(["succeeded"]).run()
    assert app.dataframe[0].value["id"].tolist() == [2, 1]
    app.text_input(key="reason_filter").set_value("data changed").run()
    assert app.dataframe[0].value["id"].tolist() == [2]
    app.selectbox(key="open_run").set_value(2).run()
    app.button(key="open").click().run()
    assert app.sidebar.radio(key="page").value == "Run detail" and app.selectbox(key="run").value == 2
    assert app.title[0].value == "Run detail"


def test_run_detail_matches_the_database(monkeypatch, filled_database):
    with session_scope(filled_database) as session:
        thresholds = {
            t.label: t for t in session.scalars(select(ClassThreshold).where(ClassThreshold.run_id == 2))
        }
        previous = {
            t.label for t in session.scalars(select(ClassThreshold).where(ClassThreshold.run_id == 1))
        }
        oof = session.get(RunMetric, (2, "oof")).fbeta_samples
    app = open_app(monkeypatch, filled_database, "Run detail")
    app.selectbox(key="run").set_value(2).run()
    metrics = {m.label: m.value for m in app.metric}
    assert (
        metrics["Status"] == "succeeded" and metrics["OOF F2"] == f"{oof:.4f}" and metrics["Samples"] == "52"
    )
    table = app.dataframe[0].value
    assert dict(zip(table["label"], table["threshold"], strict=True)) == pytest.approx(
        {label: t.threshold for label, t in thresholds.items()}
    )
    label = sorted(thresholds)[0]
    app.selectbox(key="class").set_value(label).run()
    curve = chart(app, "threshold_curve")["data"]
    assert curve[0]["y"] == pytest.approx(thresholds[label].curve)
    assert curve[1]["x"] == pytest.approx([thresholds[label].threshold])
    assert any(f"{label}: threshold {thresholds[label].threshold:.3f}" in c for c in app.caption.values)
    learning = chart(app, "learning_curves")
    assert {"16 px", "32 px"} <= {a["text"] for a in learning["layout"]["annotations"]}
    fold_counts = chart(app, "fold_counts")["data"]
    assert {trace["name"] for trace in fold_counts} == {"0", "1"}
    deltas = app.dataframe[1].value
    assert set(deltas["label"]) == set(thresholds) | previous
    assert (deltas["change"] - (deltas["fbeta"] - deltas["fbeta_previous"])).abs().max() < 1e-9


def test_data_page_shows_pulls_labels_rejections_and_images(monkeypatch, filled_database):
    with session_scope(filled_database) as session:
        rejected = session.scalars(select(RejectedRow)).all()
        with_label = {
            s.key for s in session.scalars(select(Sample)) if "one" in {lab.name for lab in s.labels}
        }
    app = open_app(monkeypatch, filled_database, "Data")
    pulls = chart(app, "pulls")["data"]
    assert {trace["name"]: trace["y"] for trace in pulls}["added"] == [40, 12, 0]
    assert {trace["name"]: trace["y"] for trace in pulls}["quarantined"] == [0, 1, 0]
    # The row whose image is missing is not rejected: its sample is quarantined, with the reason.
    assert rejected == [] and len(app.dataframe) == 1  # no rejected rows table, the inactive samples
    inactive = app.dataframe[0].value
    assert list(inactive["id"]) == ["no_such_image"] and list(inactive["status"]) == ["quarantined"]
    assert "images/no_such_image.png not found" in inactive["reason"].iloc[0]
    app.selectbox(key="gallery_label").set_value("one").run()
    captions = [image.caption for element in app.get("image") for image in element.proto.imgs]
    assert captions and all(c.split(":")[0] in with_label for c in captions)


def test_predictions_page_sorts_errors_of_a_class(monkeypatch, filled_database):
    with session_scope(filled_database) as session:
        run = session.get_one(Run, 2)
        thresholds = {
            t.label: t.threshold
            for t in session.scalars(select(ClassThreshold).where(ClassThreshold.run_id == 2))
        }
        rows = session.execute(
            select(Prediction.probabilities, Sample)
            .join(Sample)
            .where(Prediction.run_id == 2, Prediction.split == "oof")
        ).all()
        truth = [({lab.name for lab in sample.labels}, probabilities) for probabilities, sample in rows]
    label = run.vocabulary[0]
    column, threshold = run.vocabulary.index(label), thresholds[label]
    false_positives = sum(1 for labels, p in truth if p[column] >= threshold and label not in labels)
    false_negatives = sum(1 for labels, p in truth if p[column] < threshold and label in labels)
    app = open_app(monkeypatch, filled_database, "Predictions")
    app.selectbox(key="prediction_class").set_value(label).run()
    headers = [h.value for h in app.subheader]
    assert headers == [f"False positives: {false_positives}", f"False negatives: {false_negatives}"]
