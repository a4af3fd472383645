"""The dashboard with Streamlit's AppTest: every page's content against the database, on a database
filled by really running the tiny flow (plus runs of every other outcome recorded through db/), an
empty one, one after `foldwise ingest` alone, and one with a run running."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import delete, select

from foldwise.config import load_config
from foldwise.dashboard.views import data_view
from foldwise.db import registry, training
from foldwise.db.models import (
    ClassMetric,
    ClassThreshold,
    DataPull,
    Prediction,
    PrequentialScore,
    RejectedRow,
    Run,
    RunMetric,
    Sample,
)
from foldwise.db.session import ensure_schema, session_scope, upgrade
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.ingest import ingest
from foldwise.tasks.retention import storage_use
from tests.conftest import CONFIGS, finished_run, tiny_demo_config
from tests.dashboard.conftest import (
    FAILED_RUN,
    FLOW_RUN_ID,
    GATE_FAILED_RUN,
    REJECTED_RUN,
    RUNNING_RUN,
    chart,
    charts,
    copy_database,
    open_app,
    table,
)

pytestmark = pytest.mark.slow
PAGES = ("Overview", "Runs", "Run detail", "Compare", "Data", "Predictions")


def gate_outcomes(url: str) -> dict[int, str]:
    """What the database says became of each successful run (its latest decision)."""
    with session_scope(url) as session:
        latest = {d.candidate_run_id: d for d in registry.decisions(session=session) if d.candidate_run_id}
    return {run_id: registry.decision_outcome(d.kind, d.promoted) for run_id, d in latest.items()}


def image_captions(app) -> list[str]:
    return [image.caption for element in app.get("image") for image in element.proto.imgs]


def image_lines(caption: str) -> tuple[str, list[str]]:
    """A gallery caption (Markdown, escaped): its title and its lines."""
    title, *lines = caption.replace("\\", "").split("  \n")
    return title, lines


def test_an_empty_database_gets_a_friendly_page_and_is_not_created(monkeypatch, tmp_path):
    path = tmp_path / "none.db"
    for page in PAGES:
        app = open_app(monkeypatch, f"sqlite:///{path}", page)
        assert "No runs yet" in app.info[0].value and "foldwise ingest" in app.info[0].value
        assert app.sidebar.button(key="refresh")
    assert not path.exists()


def test_an_outdated_schema_says_to_upgrade(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    upgrade(url, "0005")
    app = open_app(monkeypatch, url, "Runs")
    assert "schema is at revision 0005" in app.error[0].value and "foldwise db upgrade" in app.error[0].value


def test_after_ingest_alone_the_data_page_shows_the_data(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    config = tiny_demo_config(tmp_path, url)
    deliver_drop(config.source.path, n_images=20)
    ingest(config)
    app = open_app(monkeypatch, url, "Data")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Samples in the data set"] == "20" and metrics["Pulls"] == "1"
    assert chart(app, "pulls")["data"][0]["y"] == [20]  # added
    assert sum(chart(app, "label_frequencies")["data"][0]["y"]) >= 20
    assert len(image_captions(app)) == 20
    assert "No storage use recorded yet: each run that trains records the data home's use at its end." in (
        app.caption.values
    )
    for page in ("Overview", "Run detail", "Predictions"):
        app = open_app(monkeypatch, url, page)
        assert "No runs yet" in app.info[0].value and "Data page" in app.info[0].value


def test_the_data_page_shows_duplicate_groups_conflicting_first(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    config = tiny_demo_config(tmp_path, url, "data.near_duplicates=false")  # exact copies: known groups
    drop = deliver_drop(config.source.path, n_images=12)
    images = config.source.path / "images"
    rows = dict(line.split(",") for line in drop.label_file.read_text().splitlines()[1:])
    shutil.copy(images / "d01_00003.png", images / "copy_same.png")  # same labels
    shutil.copy(images / "d01_00007.png", images / "copy_other.png")  # labels no sample of it has
    (config.source.path / "labels_copies.csv").write_text(
        f"image_name,tags\ncopy_same,{rows['d01_00003']}\ncopy_other,conflict\n"
    )
    ingest(config)
    app = open_app(monkeypatch, url, "Data")
    metrics = {m.label: m.value for m in app.metric}
    shown = [metrics[name] for name in ("Duplicate groups", "Samples in them", "With conflicting labels")]
    assert shown == ["2", "4", "1"]
    groups = table(app, "members (labels)")
    assert groups.values.tolist() == [  # conflicting first
        [True, 2, f"d01_00007 ({rows['d01_00007']}) / copy_other (conflict)"],
        [False, 2, f"d01_00003 ({rows['d01_00003']}) / copy_same ({rows['d01_00003']})"],
    ]
    monkeypatch.setattr(data_view, "MAX_GROUPS_SHOWN", 1)
    app = open_app(monkeypatch, url, "Data")
    assert table(app, "members (labels)")["conflicting labels"].tolist() == [True]
    assert (
        "The first 1 of 2 groups; `foldwise samples --status duplicates` lists them all."
        in app.caption.values
    )


def test_runs_without_samples_do_not_break_the_data_page(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    ensure_schema(url)
    with session_scope(url) as session:
        session.add(DataPull(source="/empty", dataset_version="none", dataset_size=0))
        finished_run(session, "failed", "no labeled samples")
    app = open_app(monkeypatch, url, "Data")
    assert "No active sample: no label to count." in app.caption.values
    assert "label_frequencies" not in " ".join(charts(app))
    for page in ("Overview", "Runs", "Run detail", "Compare", "Predictions"):
        open_app(monkeypatch, url, page)  # no exception


def test_overview_explains_the_champion(monkeypatch, filled_database):
    with session_scope(filled_database) as session:
        scores = {(m.run_id, m.split): m.score for m in session.scalars(select(RunMetric))}
        last = session.scalar(select(Run).order_by(Run.id.desc()))
        champion = registry.current_champion(session=session)
        made_champion = [d for d in registry.decisions(session=session) if d.champion_after == champion][-1]
    app = open_app(monkeypatch, filled_database)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics[f"Champion: run {champion}"] == f"{scores[champion, 'oof']:.4f}"
    assert "OOF F2 (samples), cross-fitted" in app.caption.values
    assert (
        f"champion: run {champion} since {made_champion.decided_at:%Y-%m-%d %H:%M} UTC, because "
        f"{made_champion.reason}" in app.caption.values
    )
    assert metrics[f"Last run: run {last.id}"] == "skipped" and last.reason in app.caption.values
    series = {trace["name"]: trace for trace in chart(app, "fbeta_over_time")["data"]}
    assert series["out of fold (cross-fitted)"]["y"] == pytest.approx([scores[1, "oof"], scores[2, "oof"]])
    assert series["gate set"]["y"] == pytest.approx([scores[1, "gate_set"], scores[2, "gate_set"]])
    assert series[f"champion (run {champion})"]["x"] == [champion]
    assert chart(app, "fbeta_over_time")["layout"]["yaxis"]["range"] == [-0.02, 1.02]
    decisions = table(app, "why")
    assert decisions["run"].tolist() == [2, 1] and decisions["why"].iloc[-1] == "promoted: the first model"
    assert chart(app, "size_over_time")["data"][0]["y"] == [40, 52, 52]


def test_overview_trends_the_prequential_score_with_its_per_class_detail_and_label_shift(
    monkeypatch, filled_database, tmp_path
):
    with session_scope(filled_database) as session:  # run 2's pull: 12 new samples, scored by run 1
        [row] = session.scalars(select(PrequentialScore)).all()
        champion_oof = session.get_one(RunMetric, (row.champion_run_id, "oof")).score
        expected = (row.pull_id, row.champion_run_id, row.n_samples, row.score, row.classes, row.label_shift)
    pull_id, champion_id, n_samples, score, classes, shift = expected
    assert (champion_id, n_samples) == (1, 12)
    app = open_app(monkeypatch, filled_database)
    series = {trace["name"]: trace for trace in chart(app, "prequential_over_time")["data"]}
    assert series["on the pull's new samples"]["y"] == pytest.approx([score])
    assert series["the champion's OOF (reference)"]["y"] == pytest.approx([champion_oof])
    assert chart(app, "prequential_over_time")["layout"]["yaxis"]["range"] == [-0.02, 1.02]
    assert (
        f"Latest: pull {pull_id}, champion run 1 scored {score:.4f} on 12 new samples "
        f"(its OOF {champion_oof:.4f})" in app.caption.values
    )
    bars = {trace["name"]: trace for trace in chart(app, "prequential_classes")["data"]}
    assert bars["recall"]["x"] == [c["label"] for c in classes]
    assert bars["F2"]["y"] == pytest.approx([c["fbeta"] for c in classes])
    shares = {
        trace["name"]: dict(zip(trace["x"], trace["y"], strict=True))
        for trace in chart(app, "label_shift")["data"]
    }
    assert shares["new samples"] == pytest.approx({label: s["new"] for label, s in shift.items()})
    assert shares["rest of the data set"] == pytest.approx({label: s["before"] for label, s in shift.items()})
    assert table(app, "support")["support"].sum() == sum(c["support"] for c in classes)

    # Before any pull brings new samples to a champion: the section says so.
    url = copy_database(filled_database, tmp_path)
    with session_scope(url) as session:
        session.execute(delete(PrequentialScore))
    app = open_app(monkeypatch, url)
    assert any(caption.startswith("No prequential score yet") for caption in app.caption.values)
    assert "prequential_over_time" not in " ".join(charts(app))


def test_every_run_wears_its_outcome(monkeypatch, operator_database):
    gated = gate_outcomes(operator_database)
    with session_scope(operator_database) as session:
        champion = registry.current_champion(session=session)
    expected = {1: gated[1], 2: gated[2], 3: "skipped", FAILED_RUN: "failed"} | {
        GATE_FAILED_RUN: "gate-failed",
        REJECTED_RUN: "rejected",
        RUNNING_RUN: "running",
    }
    app = open_app(monkeypatch, operator_database, "Runs")
    runs = table(app, "badges")
    badges = dict(zip(runs["id"], runs["badges"], strict=True))
    assert {run_id: list(b) for run_id, b in badges.items()} == {
        run_id: [outcome, "champion"] if run_id == champion else [outcome]
        for run_id, outcome in expected.items()
    }
    assert runs["id"].tolist() == [7, 6, 5, 4, 3, 2, 1]
    assert runs.set_index("id").loc[RUNNING_RUN, "duration"] == "running"

    app.multiselect(key="outcome_filter").set_value(["rejected", "gate-failed"]).run()
    assert table(app, "badges")["id"].tolist() == [REJECTED_RUN, GATE_FAILED_RUN]
    app.multiselect(key="outcome_filter").set_value(list(set(expected.values()))).run()
    app.text_input(key="reason_filter").set_value("cannot read").run()
    assert table(app, "badges")["id"].tolist() == [GATE_FAILED_RUN]

    for run_id, color in ((REJECTED_RUN, "orange"), (FAILED_RUN, "red"), (champion, "green")):
        detail = open_app(monkeypatch, operator_database, "Run detail")
        detail.selectbox(key="run").set_value(run_id).run()
        shown = detail.markdown.values[0]
        assert shown.startswith(f":{color}-badge[{expected[run_id]}]")
        assert (":violet-badge[:material/star: champion]" in shown) == (run_id == champion)
    overview = open_app(monkeypatch, operator_database)
    assert {m.label: m.value for m in overview.metric}[f"Last run: run {RUNNING_RUN}"] == "running"


def test_a_running_run_shows_its_progress_links_to_prefect_and_refreshes(
    monkeypatch, operator_database, tmp_path
):
    url = copy_database(operator_database, tmp_path)
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    expected = (
        f"Run {RUNNING_RUN}: 1 of 2 folds done (fold 0 reused from run {FAILED_RUN}); training fold 1: "
        "stage 1 of 2 (16 px), epoch 1 of 1 done"
    )
    for page in ("Overview", "Run detail"):
        app = open_app(monkeypatch, url, page)
        if page == "Run detail":
            app.selectbox(key="run").set_value(RUNNING_RUN).run()
        progress = app.get("progress")[0].proto
        assert progress.text == expected and progress.value == 75  # 3 of 4 epochs, the reused fold whole
        link = f"[Prefect flow run](http://127.0.0.1:4200/runs/flow-run/{FLOW_RUN_ID})"
        assert any(link in caption for caption in app.caption.values)
        assert f"Run {RUNNING_RUN} is running: this page refreshes every 10 s." in app.sidebar.info.values
    losses = chart(app, "loss_curves")["data"]
    assert [trace["y"] for trace in losses if trace["name"] == "fold 1"] == [[0.65], [0.75]]  # train, valid

    assert not app.warning

    monkeypatch.delenv("PREFECT_API_URL")
    with session_scope(url) as session:  # its process stopped beating a while ago
        run = session.get_one(Run, RUNNING_RUN)
        run.heartbeat_at -= timedelta(minutes=run.config["service"]["stale_after_minutes"] + 1)
    st.cache_data.clear()
    app = open_app(monkeypatch, url)
    assert any(f"Prefect flow run `{FLOW_RUN_ID}` (set PREFECT_UI_URL" in c for c in app.caption.values)
    assert "its process is probably gone" in app.warning[0].value

    with session_scope(url) as session:
        training.finish_run(session=session, run_id=RUNNING_RUN, status="crashed", reason="killed")
    app.sidebar.button(key="refresh").click().run()
    assert not app.get("progress") and not app.sidebar.info
    assert {m.label: m.value for m in app.metric}[f"Last run: run {RUNNING_RUN}"] == "crashed"
    assert any("refresh by themselves only while a run is running" in c for c in app.sidebar.caption.values)


def test_run_detail_matches_the_database(monkeypatch, filled_database):
    with session_scope(filled_database) as session:
        thresholds = {
            t.label: t for t in session.scalars(select(ClassThreshold).where(ClassThreshold.run_id == 2))
        }
        metrics = {
            (m.split, m.label): m for m in session.scalars(select(ClassMetric).where(ClassMetric.run_id == 2))
        }
        previous = {
            t.label for t in session.scalars(select(ClassThreshold).where(ClassThreshold.run_id == 1))
        }
        oof = session.get(RunMetric, (2, "oof")).score
        run = session.get_one(Run, 2)
        champion = registry.current_champion(session=session)
        oof_rows = [
            (probabilities, {lab.name for lab in sample.labels})
            for probabilities, sample in session.execute(
                select(Prediction.probabilities, Sample)
                .join(Sample)
                .where(Prediction.run_id == 2, Prediction.split == "oof")
            )
        ]
    app = open_app(monkeypatch, filled_database, "Run detail")
    app.selectbox(key="run").set_value(2).run()
    values = {m.label: m.value for m in app.metric}
    assert values["OOF F2 (samples), cross-fitted"] == f"{oof:.4f}" and values["Samples"] == "52"

    classes = table(app, "fbeta_gate_set")
    assert dict(zip(classes["label"], classes["threshold"], strict=True)) == pytest.approx(
        {label: t.threshold for label, t in thresholds.items()}
    )
    gate_set = {label: m.fbeta for (split, label), m in metrics.items() if split == "gate_set"}
    shown = dict(zip(classes["label"], classes["fbeta_gate_set"], strict=True))
    assert gate_set and {label: shown[label] for label in gate_set} == pytest.approx(gate_set)
    assert chart(app, "class_bars")["layout"]["yaxis"]["range"] == [-0.02, 1.02]

    # One class: its precision-recall point at the threshold (scikit-learn in the dashboard) is what the
    # stored predictions and labels give (counted here).
    label = next(label for label in sorted(thresholds) if metrics["oof", label].support > 0)
    column = run.vocabulary.index(label)
    predicted = [p[column] >= thresholds[label].threshold for p, _ in oof_rows]
    positive = [label in labels for _, labels in oof_rows]
    true_positives = sum(p and t for p, t in zip(predicted, positive, strict=True))
    app.selectbox(key="class").set_value(label).run()
    curve = chart(app, "threshold_curve")["data"]
    assert curve[0]["y"] == pytest.approx(thresholds[label].curve) and curve[0]["name"] == "F2"
    assert {trace["name"] for trace in curve} == {"F2", "precision", "recall"}
    point = chart(app, "precision_recall")["data"][1]
    assert point["y"] == pytest.approx([true_positives / sum(predicted)])
    assert point["x"] == pytest.approx([true_positives / sum(positive)])
    assert any(f"{label}: threshold {thresholds[label].threshold:.3f}" in c for c in app.caption.values)

    loss = chart(app, "loss_curves")
    assert {"16 px", "32 px"} <= {a["text"] for a in loss["layout"]["annotations"]}
    assert loss["layout"]["xaxis"]["title"]["text"] == "epoch (across stages)"
    assert {trace["line"]["dash"] for trace in loss["data"]} == {
        "solid",
        "dash",
    }  # train and valid, one panel
    assert chart(app, "fbeta_curves")["layout"]["yaxis"]["range"] == [-0.02, 1.02]
    assert {trace["name"] for trace in chart(app, "fold_counts")["data"]} == {"fold 0", "fold 1"}

    against = app.radio(key="change_against")
    assert against.value.startswith("the champion" if champion != 2 else "the champion it replaced")
    deltas = table(app, "fbeta_other")
    assert set(deltas["label"]) == set(thresholds) | previous
    assert (deltas["change"] - (deltas["fbeta"] - deltas["fbeta_other"])).abs().max() < 1e-9

    provenance = app.markdown.values[-1]
    assert (
        f"- **seed**: {run.seed}\n" in provenance
        and "- **warm start**: no: trained from scratch" in provenance
    )
    assert f"fastai={run.package_versions['fastai']}" in provenance
    assert "Prefect flow run" in provenance
    config = table(app, "key")
    assert dict(zip(config["key"], config["value"], strict=True))["train.batch_size"] == "16"
    assert "None" not in config["value"].tolist() and "null" not in config["value"].tolist()


def test_compare_shows_two_runs_side_by_side(monkeypatch, filled_database):
    with session_scope(filled_database) as session:
        overall = {m.run_id: m for m in session.scalars(select(RunMetric).where(RunMetric.split == "oof"))}
        per_class = {
            (m.run_id, m.label): m.fbeta
            for m in session.scalars(select(ClassMetric).where(ClassMetric.split == "oof"))
        }
        versions = {r.id: r.dataset_version for r in session.scalars(select(Run))}
    app = open_app(monkeypatch, filled_database, "Compare")
    app.multiselect(key="compare").set_value([1, 2]).run()
    overall_table = table(app, "OOF F2 (samples), cross-fitted")
    row = overall_table.loc["OOF F2 (samples), cross-fitted"]
    assert row["run 1"] == pytest.approx(overall[1].score) and row["run 2"] == pytest.approx(overall[2].score)
    assert row["run 2 − run 1"] == pytest.approx(overall[2].score - overall[1].score)
    baseline = overall_table.loc["OOF baseline: every label predicted"]
    assert baseline["run 1"] == pytest.approx(overall[1].baseline_all)
    classes = table(app, "run 2 − run 1")
    for label, values in classes.iterrows():
        if (1, label) in per_class and (2, label) in per_class:
            assert values["run 2 − run 1"] == pytest.approx(per_class[2, label] - per_class[1, label])
    assert {trace["name"] for trace in chart(app, "compare_fbeta")["data"]} == {"run 1", "run 2"}
    differences = table(app, "run.dataset_version")
    assert differences.loc["run.dataset_version"].tolist() == [versions[1], versions[2]]
    assert all(len(set(values)) > 1 for _, values in differences.iterrows())  # only what differs

    app = open_app(monkeypatch, filled_database, "Runs")
    app.multiselect(key="runs_to_compare").set_value([2, 1]).run()
    app.button(key="compare").click().run()
    assert app.title[0].value == "Compare runs" and app.multiselect(key="compare").value == [2, 1]


def test_runs_page_opens_a_run(monkeypatch, filled_database):
    app = open_app(monkeypatch, filled_database, "Runs")
    app.selectbox(key="open_run").set_value(2).run()
    app.button(key="open").click().run()
    assert app.sidebar.radio(key="page").value == "Run detail" and app.selectbox(key="run").value == 2
    assert app.title[0].value == "Run detail"


def test_data_page_shows_pulls_labels_rejections_and_images(monkeypatch, filled_database):
    with session_scope(filled_database) as session:
        rejected = session.scalars(select(RejectedRow)).all()
        with_label = {
            s.key for s in session.scalars(select(Sample)) if "one" in {lab.name for lab in s.labels}
        }
    app = open_app(monkeypatch, filled_database, "Data")
    pulls = {trace["name"]: trace["y"] for trace in chart(app, "pulls")["data"]}
    assert pulls["added"] == [40, 12, 0] and pulls["quarantined"] == [0, 1, 0]
    assert table(app, "new_labels")["pull"].tolist() == [3, 2, 1]
    # The row whose image is missing is not rejected: its sample is quarantined, with the reason.
    assert rejected == [] and "No row was rejected." in app.caption.values
    inactive = table(app, "status")
    assert list(inactive["id"]) == ["no_such_image"] and list(inactive["status"]) == ["quarantined"]
    assert "images/no_such_image.png not found" in inactive["reason"].iloc[0]
    app.selectbox(key="gallery_label").set_value("one").run()
    captions = [image_lines(caption) for caption in image_captions(app)]
    assert captions and {key for key, _ in captions} <= with_label


def test_data_page_shows_the_storage_each_run_recorded(monkeypatch, filled_database):
    """Issue 16 item 8: each run that trained records the data home's use by kind (as `foldwise storage`
    counts it); the Data page stacks it per run."""
    with session_scope(filled_database) as session:
        recorded = {run.id: run.storage_bytes for run in session.scalars(select(Run).order_by(Run.id))}
    home = Path(filled_database.removeprefix("sqlite:///")).parent
    config = load_config(
        CONFIGS / "demo.toml",
        [f"source.path={home / 'source'}", f"data_home={home}", f"database_url={filled_database}"],
    )
    assert recorded[3] is None  # skipped: nothing trained, nothing recorded
    # Nothing was written to the weights or the image cache since run 2 ended.
    now = storage_use(config)
    assert recorded[2]["weights"] == now["weights"] > recorded[1]["weights"] > 0
    assert recorded[2]["image cache"] == now["image cache"] > 0
    app = open_app(monkeypatch, filled_database, "Data")
    bars = {trace["name"]: trace for trace in chart(app, "storage")["data"]}
    assert list(bars["weights"]["x"]) == ["run 1", "run 2"]
    assert list(bars["weights"]["y"]) == [recorded[1]["weights"] / 2**20, recorded[2]["weights"] / 2**20]
    assert any(caption.startswith("After run 2: ") for caption in app.caption.values)


def test_predictions_page_opens_on_the_champion_and_ranks_errors(monkeypatch, operator_database):
    with session_scope(operator_database) as session:
        champion = registry.current_champion(session=session)
        run = session.get_one(Run, champion)
        thresholds = {
            t.label: t.threshold
            for t in session.scalars(select(ClassThreshold).where(ClassThreshold.run_id == champion))
        }
        rows = session.execute(
            select(Prediction.probabilities, Sample)
            .join(Sample)
            .where(Prediction.run_id == champion, Prediction.split == "oof")
        ).all()
        truth = [({lab.name for lab in sample.labels}, probabilities) for probabilities, sample in rows]
        labels_of = {sample.key: {lab.name for lab in sample.labels} for _, sample in rows}
    app = open_app(monkeypatch, operator_database, "Predictions")
    assert app.selectbox(key="prediction_run").value == champion  # not the newest successful run
    label = max(run.vocabulary, key=lambda name: sum(1 for labels, _ in truth if name in labels))
    column, threshold = run.vocabulary.index(label), thresholds[label]
    false_positives = sorted(
        p[column] for labels, p in truth if p[column] >= threshold and label not in labels
    )
    false_negatives = sorted(p[column] for labels, p in truth if p[column] < threshold and label in labels)
    app.selectbox(key="prediction_class").set_value(label).run()
    headers = [h.value for h in app.subheader]
    assert headers == [f"False positives: {len(false_positives)}", f"False negatives: {len(false_negatives)}"]
    captions = [image_lines(caption) for caption in image_captions(app)]
    shown = [float(title.rsplit("= ", 1)[1]) for title, _ in captions]
    expected = [round(p, 2) for p in false_positives[::-1][:18]] + [round(p, 2) for p in false_negatives[:18]]
    assert captions and shown == pytest.approx(expected, abs=0.006)
    for title, (true, predicted) in captions:  # true and predicted labels: a line each
        key = title.split(":")[0]
        assert true == f"true: {' '.join(sorted(labels_of[key])) or '–'}" and predicted.startswith(
            "predicted: "
        )
    app.selectbox(key="prediction_run").set_value(REJECTED_RUN).run()  # recorded through db/ without results
    assert not app.exception and any("recorded no thresholds" in info for info in app.info.values)
