"""Champion gate, manual promote and rollback, prediction and warm start, on really trained runs."""

from __future__ import annotations

import csv
import json
import math
import re
import warnings

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness
from safetensors.torch import load_file
from sklearn.exceptions import UndefinedMetricWarning
from sqlalchemy import select
from typer.testing import CliRunner

from foldwise.cli import app
from foldwise.config import ThresholdConfig, load_config
from foldwise.db import queries, registry
from foldwise.db.models import Epoch, ModelDecision, Prediction, Run, RunMetric, Sample, TrainingLock
from foldwise.db.session import session_scope
from foldwise.flows.predict import predict_flow
from foldwise.flows.retrain import retrain
from foldwise.metrics import score
from foldwise.tasks import train as train_module
from foldwise.tasks.cache import ImageCache
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.ensemble import cold_start_reason, load_model
from foldwise.tasks.export import export_model
from foldwise.tasks.predict import ensemble_probabilities, model_item_size, predict_images
from tests.conftest import CONFIGS, TINY_TRAINING

pytestmark = pytest.mark.slow
TINY = [*TINY_TRAINING, "gate.fraction=0.2", "thresholds.min_positives=2"]


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def overrides(tmp_path, *extra):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    return [
        f"source.path={tmp_path / 'source'}",
        f"data_home={tmp_path}",
        f"database_url={url}",
        *TINY,
        *extra,
    ]


def champion(url):
    with session_scope(url) as session:
        return registry.current_champion(session=session)


def test_gate_decisions_manual_promote_and_rollback(tmp_path):
    config = load_config(CONFIGS / "demo.toml", overrides(tmp_path))
    url = config.resolved_database_url()
    deliver_drop(config.source.path, n_images=50)
    first = retrain(config)
    assert champion(url) == first.run_id
    with session_scope(url) as session:
        assert session.scalar(select(TrainingLock)) is None  # released by the gate, the run's last step
        gate_first = {s.id for s in session.scalars(select(Sample).where(Sample.in_gate_set))}
    assert 9 <= len(gate_first) <= 11  # about 20% of 50 (iterative stratification rounds), never trained on

    deliver_drop(config.source.path, n_images=20)
    second = retrain(config)
    with session_scope(url) as session:
        gate_now = {s.id for s in session.scalars(select(Sample).where(Sample.in_gate_set))}
        decision = session.scalars(select(ModelDecision).order_by(ModelDecision.id)).all()[-1]
        truth = {s.id: {label.name for label in s.labels} for s in session.scalars(select(Sample))}
        stored = {
            p.sample_id: p.probabilities
            for p in session.scalars(
                select(Prediction).where(Prediction.run_id == second.run_id, Prediction.split == "gate_set")
            )
        }
    assert gate_first < gate_now and 3 <= len(gate_now - gate_first) <= 5  # sticky; ~20% of the new drop
    assert decision.candidate_run_id == second.run_id and decision.champion_before == first.run_id
    assert decision.promoted == (champion(url) == second.run_id) and decision.details["gate_samples"] == len(
        gate_now
    )

    # The gate's numbers, recomputed from what the run stored: its gate set predictions are the gate
    # set's, and the inference path that scored it reproduces them.
    model = load_model(config, second.run_id)
    ids = sorted(gate_now)
    with session_scope(url) as session:
        hashes = [session.get(Sample, i).content_hash for i in ids]
    store = ImageCache(config).store(model_item_size(model))
    rows = np.array([store.rows[content_hash] for content_hash in hashes])
    recomputed = ensemble_probabilities(model, store.pixels(), rows)
    assert recomputed == pytest.approx(np.array([stored[i] for i in ids]), abs=1e-4)
    shared = decision.details["shared_labels"]
    columns = [model.vocab.index(label) for label in shared]
    truth_matrix = np.array([[label in truth[i] for label in shared] for i in ids])
    expected = score(recomputed[:, columns] >= model.thresholds[columns], truth_matrix, ThresholdConfig())
    assert decision.details["candidate_fbeta"] == pytest.approx(expected)

    runner = CliRunner()
    config_args = ["--config", str(CONFIGS / "demo.toml")] + [
        part for o in overrides(tmp_path) for part in ("--set", o)
    ]
    other = first.run_id if champion(url) == second.run_id else second.run_id
    before = champion(url)
    result = runner.invoke(
        app, ["promote", str(other), *config_args, "--reason", "looks better on the new site"]
    )
    assert result.exit_code == 0, result.output
    assert champion(url) == other
    listing = runner.invoke(app, ["models", *config_args]).output
    assert f"* run {other:>4}" in listing and "promoted looks better on the new site" in listing
    assert runner.invoke(app, ["promote", str(other), *config_args]).exit_code == 2  # already champion
    result = runner.invoke(app, ["rollback", *config_args])
    assert result.exit_code == 0 and champion(url) == before
    with session_scope(url) as session:
        kinds = [d.kind for d in session.scalars(select(ModelDecision).order_by(ModelDecision.id))]
    assert kinds == ["gate", "gate", "promote", "rollback"]
    if before == first.run_id:  # nothing older than the first champion to roll back to
        assert "no earlier champion" in runner.invoke(app, ["rollback", *config_args]).output


def test_predict_writes_the_submission_format_with_per_class_thresholds(tmp_path):
    config = load_config(CONFIGS / "demo.toml", overrides(tmp_path))
    deliver_drop(config.source.path, n_images=40)
    run = retrain(config)
    images = tmp_path / "new"
    drop = deliver_drop(images, n_images=6, seed=7)
    (drop.label_file.parent / "images" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out" / "preds.csv"
    summary = predict_flow(config, [str(drop.label_file.parent / "images")], str(out))
    assert summary.run_id == run.run_id and summary.n_predicted == 6
    [(path, reason)] = summary.failures  # the unreadable image is reported and skipped
    assert path.endswith("broken.png") and reason.startswith(path) and "not an image file that can be read" in reason
    record = json.loads((tmp_path / "runs" / str(run.run_id) / "model.json").read_text())
    with out.open() as handle:
        rows = list(csv.reader(handle))
    with (tmp_path / "out" / "preds_probabilities.csv").open() as handle:
        probabilities = list(csv.DictReader(handle))
    assert rows[0] == ["image_name", "tags"] and len(rows) == 7 and "broken" not in {r[0] for r in rows}
    for (image, tags), row in zip(rows[1:], probabilities, strict=True):
        assert row["image_name"] == image
        by_hand = [
            label
            for label, t in zip(record["vocab"], record["thresholds"], strict=True)
            if float(row[label]) >= t
        ]
        assert tags.split(" ") == by_hand if by_hand else tags == ""

    tta = predict_flow(config, [str(drop.label_file.parent / "images")], str(tmp_path / "tta.csv"), tta=True)
    with (tmp_path / "tta_probabilities.csv").open() as handle:
        with_tta = np.array(
            [[float(v) for k, v in r.items() if k != "image_name"] for r in csv.DictReader(handle)]
        )
    plain = np.array([[float(v) for k, v in r.items() if k != "image_name"] for r in probabilities])
    assert (
        tta.n_predicted == 6 and with_tta.shape == plain.shape and ((0 <= with_tta) & (with_tta <= 1)).all()
    )
    assert not np.allclose(with_tta, plain, atol=1e-6)  # augmented views were averaged in


def champion_and_warm_config(tmp_path, warm_stages: str):
    """A champion trained on 40 images, 10 more delivered, and a config that warm-starts from it."""
    cold = load_config(CONFIGS / "demo.toml", overrides(tmp_path))
    deliver_drop(cold.source.path, n_images=40)
    first = retrain(cold)
    deliver_drop(cold.source.path, n_images=10)
    options = overrides(tmp_path, "train.warm_start=true", f"train.warm_start_stages={warm_stages}")
    return first, load_config(CONFIGS / "demo.toml", options)


def test_warm_start_begins_from_the_champion_with_its_own_stages(tmp_path, monkeypatch):
    # A learning rate of ~0: the warm-started weights must stay the champion's.
    first, warm = champion_and_warm_config(tmp_path, "[{size=32, epochs=1, lr=1e-12}]")
    loaded = []
    real_load_weights = train_module.load_weights
    monkeypatch.setattr(
        train_module, "load_weights", lambda path: loaded.append(path) or real_load_weights(path)
    )
    second = retrain(warm)
    assert sorted(p.name for p in loaded) == ["fold0.safetensors", "fold1.safetensors"]
    assert {p.parent.name for p in loaded} == {str(first.run_id)}
    with session_scope(warm.resolved_database_url()) as session:
        stages = {
            (e.stage, e.size) for e in session.scalars(select(Epoch).where(Epoch.run_id == second.run_id))
        }
    assert stages == {(0, 32)}
    before = load_file(str(tmp_path / "runs" / str(first.run_id) / "fold0.safetensors"))
    after = load_file(str(tmp_path / "runs" / str(second.run_id) / "fold0.safetensors"))
    convolutions = [k for k, v in before.items() if v.ndim == 4]
    assert convolutions and all(np.allclose(before[k], after[k], atol=1e-6) for k in convolutions)


def test_foldwise_run_and_foldwise_models_print_the_same_oof_figure(tmp_path):
    """Issue 21: one name, one number: the configured metric (here macro F1), cross-fitted, in both."""
    options = overrides(tmp_path, "thresholds.metric='fbeta_macro'", "thresholds.beta=1")
    deliver_drop(tmp_path / "source", n_images=40)
    arguments = ["--config", str(CONFIGS / "demo.toml")] + [part for o in options for part in ("--set", o)]
    runner = CliRunner()
    ran = runner.invoke(app, ["run", *arguments])
    assert ran.exit_code == 0, ran.output
    [figure] = re.findall(r"OOF F1 \(macro\), cross-fitted (\d\.\d{4})", ran.output)
    listed = runner.invoke(app, ["models", *arguments])
    assert listed.exit_code == 0, listed.output
    assert re.findall(r"OOF F1 \(macro\), cross-fitted (\d\.\d{4})", listed.output) == [figure]
    with session_scope(load_config(CONFIGS / "demo.toml", options).resolved_database_url()) as session:
        [oof] = session.scalars(select(RunMetric).where(RunMetric.split == "oof")).all()
    assert oof.metric == "fbeta_macro" and figure == f"{oof.score:.4f}"


def test_a_warm_start_whose_stages_end_at_another_size_is_used_at_the_size_it_trained(tmp_path, monkeypatch):
    """Issue 21: warm stages ending at 24 px while `train.stages` ends at 32: the folds' predictions (so
    the gate's), model.json, prediction and export all use 24."""
    first, warm = champion_and_warm_config(tmp_path, "[{size=24, epochs=1, lr=1e-3}]")
    assert warm.train.stages[-1].size == 32
    predicted_at = []
    real_batches = train_module.prediction_batches
    monkeypatch.setattr(
        train_module,
        "prediction_batches",
        lambda images, size, *rest: predicted_at.append(size) or real_batches(images, size, *rest),
    )
    second = retrain(warm)
    assert predicted_at and set(predicted_at) == {24}  # out-of-fold and gate-set predictions
    with session_scope(warm.resolved_database_url()) as session:
        run = session.get_one(Run, second.run_id)
        assert run.warm_start_from == first.run_id
        stored = queries.gate_set_probabilities(session=session, run_id=second.run_id)
        hashes = {i: session.get(Sample, i).content_hash for i in stored}
    record = json.loads((tmp_path / "runs" / str(second.run_id) / "model.json").read_text())
    assert record["image_size"] == 24 and record["warm_start_from"] == first.run_id

    model = load_model(warm, second.run_id)
    assert model.image_size == 24 and model_item_size(model) == math.ceil(24 * warm.augment.presize)
    # The gate's recorded probabilities are what predicting at the model's size gives now.
    ids = sorted(stored)
    store = ImageCache(warm).store(model_item_size(model))
    rows = np.array([store.rows[hashes[i]] for i in ids])
    recomputed = ensemble_probabilities(model, store.pixels(), rows)
    assert recomputed == pytest.approx(np.array([stored[i] for i in ids]), abs=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)  # `foldwise predict` printed it twice
        assert predict_images(warm, [warm.source.path / "images"], model).probabilities.shape[0] == 50

    exported = export_model(model, tmp_path / "serving")
    preprocessing = json.loads(exported.metadata_path.read_text())["preprocessing"]
    assert preprocessing["stage_size"] == 24 and preprocessing["item_size"] == model_item_size(model)


def test_a_model_recorded_before_heads_were_a_setting_keeps_fastais_head(tmp_path):
    """Runs from before `model.head` trained fastai's head even from scratch, where `auto` now means
    a linear one: their models still load and predict, and a from-scratch run does not warm-start
    from them."""
    old = load_config(CONFIGS / "demo.toml", overrides(tmp_path, "model.head=fastai"))
    deliver_drop(old.source.path, n_images=30)
    first = retrain(old)
    record_path = tmp_path / "runs" / str(first.run_id) / "model.json"
    record = json.loads(record_path.read_text())
    del record["config"]["model"]["head"]
    record_path.write_text(json.dumps(record))

    now = load_config(CONFIGS / "demo.toml", overrides(tmp_path))
    model = load_model(now, first.run_id)
    assert model.config.model.head == "fastai" and now.model.resolved_head() == "linear"
    predictions = predict_images(now, [old.source.path / "images"], model)
    assert predictions.probabilities.shape == (30, len(model.vocab))
    assert cold_start_reason(now, first.run_id, fold_set_id=0) == (
        f"champion run {first.run_id} has a fastai head, this run trains a linear one"
    )
