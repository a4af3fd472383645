"""The retrain flow end to end on tiny data, as Prefect runs it (a real temporary Prefect server)."""

import random
import threading
import tomllib
from importlib.metadata import version

import numpy as np
import pytest
import torch
from fastai.data.core import DataLoaders
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import func, select

from foldwise.config import load_config
from foldwise.db.models import ClassMetric, ClassThreshold, Epoch, FoldResult, Prediction, Run, RunMetric
from foldwise.db.session import session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks import train as train_module
from foldwise.tasks.batches import CachedBatches
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.report import build_report
from foldwise.tasks.train import PretrainedWeightsUnavailable, build_learner
from tests.conftest import CONFIGS, TINY_TRAINING, tiny_demo_config

pytestmark = pytest.mark.slow
NO_GATE = "gate.fraction=0"  # every sample in a fold; the gate set has its own tests
TINY = [*TINY_TRAINING, NO_GATE]


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def tiny_config(tmp_path, database_url, *extra):
    return tiny_demo_config(tmp_path, database_url, NO_GATE, *extra)


def test_train_skip_and_retrain_on_new_data(tmp_path, database_url, monkeypatch):
    config = tiny_config(tmp_path, database_url)
    deliver_drop(config.source.path, n_images=48)
    seen_shapes = []
    original = train_module.build_learner

    def spying_build_learner(dls, n_out, config, device):
        learn = original(dls, n_out, config, device)
        learn.model.register_forward_pre_hook(
            lambda module, args: seen_shapes.append(tuple(args[0].shape[-2:]))
        )
        return learn

    monkeypatch.setattr(train_module, "build_learner", spying_build_learner)
    first = retrain(config)
    assert first.status == "succeeded" and 0 <= first.score_oof <= 1 and first.metric == "F2 (samples)"
    # Progressive resizing: the model saw 16 px batches, then 32 px batches.
    assert (16, 16) in seen_shapes and (32, 32) in seen_shapes
    assert seen_shapes.index((32, 32)) > seen_shapes.index((16, 16))

    with session_scope(database_url) as session:
        run = session.get_one(Run, first.run_id)
        assert run.status == "succeeded" and run.dataset_size == 48 and run.config["folds"]["n_folds"] == 2
        assert run.package_versions["torch"] == version("torch") and run.seed == 42
        phases = {"pull (images decoded into the cache)", "folds", "thresholds and records", "gate"}
        phases |= {f"fold {fold} {part}" for fold in (0, 1) for part in ("training", "prediction")}
        assert set(run.phase_seconds) == phases and all(seconds > 0 for seconds in run.phase_seconds.values())
        epochs = session.scalars(select(Epoch).where(Epoch.run_id == run.id)).all()
        assert sorted({(e.fold, e.stage, e.size) for e in epochs}) == [
            (0, 0, 16),
            (0, 1, 32),
            (1, 0, 16),
            (1, 1, 32),
        ]
        assert session.scalar(select(func.count()).select_from(FoldResult)) == 2
        n_oof = session.scalar(
            select(func.count()).where(Prediction.run_id == run.id, Prediction.split == "oof")
        )
        assert n_oof == 48  # every sample predicted once, by the fold that did not train on it
        thresholds = session.scalars(select(ClassThreshold).where(ClassThreshold.run_id == run.id)).all()
        assert {t.label for t in thresholds} == set(run.vocabulary)
        overall = session.scalar(
            select(RunMetric).where(RunMetric.run_id == run.id, RunMetric.split == "oof")
        )
        assert overall.score == pytest.approx(first.score_oof) and overall.metric == "fbeta_samples"
        assert (
            overall.score_in_sample >= 0 and 0 < overall.baseline_all <= 1 and 0 < overall.baseline_prior <= 1
        )
        assert run.threshold_strategy in ("per-class", "global") and "cross-fitted" in run.threshold_reason
        assert session.scalar(select(func.count()).where(ClassMetric.run_id == run.id)) == len(run.vocabulary)
    assert (tmp_path / "runs" / str(first.run_id) / "fold1.safetensors").is_file()

    second = retrain(config)
    assert second.status == "skipped" and "no new data since run" in second.reason
    deliver_drop(config.source.path, n_images=12)
    third = retrain(config)
    assert third.status == "succeeded"
    with session_scope(database_url) as session:
        statuses = [r.status for r in session.scalars(select(Run).order_by(Run.id))]
        assert statuses == ["succeeded", "skipped", "succeeded"]
        assert session.get_one(Run, third.run_id).dataset_size == 60
        vocabulary = session.get_one(Run, third.run_id).vocabulary
        oof_scores = {
            m.run_id: m.score for m in session.scalars(select(RunMetric).where(RunMetric.split == "oof"))
        }

    # The run report (published as Prefect artifacts): the skip's reason, the comparison with run 1.
    assert second.reason in build_report(config, second.run_id).markdown
    report = build_report(config, third.run_id)
    change = oof_scores[third.run_id] - oof_scores[first.run_id]
    assert f"| OOF F2 (samples), cross-fitted | {oof_scores[third.run_id]:.4f} | " in report.markdown
    assert f"| {oof_scores[first.run_id]:.4f} | {change:+.4f} |" in report.markdown
    assert "| data set size | 60 | 48 | +12 |" in report.markdown
    assert "12 added" in report.markdown and [row["label"] for row in report.class_table] == vocabulary


def test_gate_set_is_never_trained_on_and_predicted_by_every_fold(tmp_path, database_url, monkeypatch):
    config = tiny_config(tmp_path, database_url, "data.fixed_split_column=is_valid")
    drop = deliver_drop(config.source.path, n_images=40)
    lines = drop.label_file.read_text().splitlines()
    drop.label_file.write_text(
        "\n".join([lines[0] + ",is_valid"] + [f"{line},{i % 4 == 0}" for i, line in enumerate(lines[1:])])
        + "\n"  # a label file without its last line break is still being written, and waits
    )
    trained_on = []
    original = train_module.stage_loaders

    def spying_stage_loaders(images, valid, *args, **kwargs):
        trained_on.append(set(images.frame["sample_id"][~valid]))
        return original(images, valid, *args, **kwargs)

    monkeypatch.setattr(train_module, "stage_loaders", spying_stage_loaders)
    summary = retrain(config)
    assert summary.score_gate_set is not None
    with session_scope(database_url) as session:
        from foldwise.db.models import Sample

        gate_set_ids = set(session.scalars(select(Sample.id).where(Sample.pinned_to_gate_set)))
        predicted = set(session.scalars(select(Prediction.sample_id).where(Prediction.split == "gate_set")))
        metric = session.scalar(select(RunMetric).where(RunMetric.split == "gate_set"))
    assert len(gate_set_ids) == 10 and predicted == gate_set_ids and metric.n_samples == 10
    assert trained_on and all(not (ids & gate_set_ids) for ids in trained_on)


def test_failed_run_is_recorded_with_the_error(tmp_path, database_url):
    config = tiny_config(tmp_path, database_url, "train.device=cuda:7")
    deliver_drop(config.source.path, n_images=20)
    with pytest.raises(Exception, match="cuda:7"):
        retrain(config)
    with session_scope(database_url) as session:
        run = session.scalar(select(Run))
        assert run.status == "failed" and "cuda:7" in run.reason
        assert session.scalar(select(func.count()).select_from(ClassThreshold)) == 0


def test_offline_pretrained_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-cache"))
    config = load_config(
        CONFIGS / "demo.toml", [f"source.path={tmp_path / 'source'}", "model.pretrained=true", *TINY]
    )
    pixels = np.zeros((8, 20, 20, 3), dtype=np.uint8)
    batches = CachedBatches(
        pixels, np.arange(8), np.zeros((8, 1), np.float32), 16, config, torch.device("cpu"), False
    )
    with pytest.raises(
        PretrainedWeightsUnavailable, match="cannot download weights for resnet18.*model.pretrained=false"
    ):
        build_learner(DataLoaders(batches, batches), 1, config, torch.device("cpu"))


def test_same_inputs_and_seed_give_the_same_thresholds(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    config = tiny_config(tmp_path, url)
    deliver_drop(config.source.path, n_images=32)
    first = retrain(config)
    # Prefect's threads draw from the global `random` at times of their own (websocket pings);
    # a thread drawing all through the second run must not change its results.
    stop = threading.Event()
    drawer = threading.Thread(target=lambda: [random.getrandbits(32) for _ in iter(stop.is_set, True)])
    drawer.start()
    try:
        second = retrain(config, force=True)
    finally:
        stop.set()
        drawer.join()
    with session_scope(url) as session:

        def thresholds(run_id):
            rows = session.scalars(select(ClassThreshold).where(ClassThreshold.run_id == run_id)).all()
            return {t.label: t.threshold for t in rows}

        assert thresholds(first.run_id) == thresholds(second.run_id)
        runs = session.scalars(select(Run).order_by(Run.id)).all()
        assert runs[0].fold_set_id != runs[1].fold_set_id


def test_the_demo_config_learns(tmp_path):
    """Issue 14: the demo's own settings (not the tests' tiny ones) learn its first drop: the
    cross-fitted out-of-fold score is far above predicting every label, and above the label priors.
    Its first stage only, on 2 folds: the whole demo (`make demo`) is too long for the suite."""
    first_stage = tomllib.loads((CONFIGS / "demo.toml").read_text())["train"]["stages"][0]
    database_url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    config = load_config(
        CONFIGS / "demo.toml",
        [
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path}",
            f"database_url={database_url}",
            "folds.n_folds=2",
            f"train.stages=[{{size={first_stage['size']}, epochs={first_stage['epochs']}, lr={first_stage['lr']}}}]",
            NO_GATE,
        ],
    )
    deliver_drop(config.source.path)  # the demo's first drop
    summary = retrain(config)
    with session_scope(database_url) as session:
        overall = session.scalar(
            select(RunMetric).where(RunMetric.run_id == summary.run_id, RunMetric.split == "oof")
        )
        assert overall.score >= overall.baseline_all + 0.15, (overall.score, overall.baseline_all)
        assert overall.score > overall.baseline_prior + 0.05, (overall.score, overall.baseline_prior)
