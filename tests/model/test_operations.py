"""Operating a trained model: alerts at the end of real runs (to a webhook receiver on loopback, through
Apprise and a Prefect notification block), export to ONNX checked against PyTorch, and retention
(gc, pins, the step after each run) on really trained runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import select
from typer.testing import CliRunner

from foldwise.cli import app
from foldwise.config import load_config
from foldwise.db import registry
from foldwise.db.models import FoldResult, Run
from foldwise.db.session import session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.alerts import prequential_alert
from foldwise.tasks.cache import ImageCache
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.ensemble import ModelError, load_model, remove_unrecorded_files
from foldwise.tasks.export import EnsembleGraph, fold_modules
from foldwise.tasks.predict import ensemble_probabilities, model_item_size
from foldwise.tasks.retention import storage_use
from foldwise.units import byte_size
from tests.code.webhook import closed_port, receiving
from tests.conftest import CONFIGS, SETTLED

pytestmark = pytest.mark.slow
ALERT_ENV, DEAD_ENV = "FOLDWISE_TEST_ALERT_URL", "FOLDWISE_TEST_DEAD_ALERT_URL"
BLOCK = "custom-webhook/foldwise-test"
ONE_STAGE = "train.stages=[{size=16, epochs=1, lr=1e-2}]"  # items of 20 px
OTHER_SIZE = "train.stages=[{size=24, epochs=1, lr=1e-2}]"  # items of 30 px


def overrides(home: Path, *extra: str) -> list[str]:
    return [
        f"source.path={home / 'source'}",
        f"data_home={home}",
        f"database_url=sqlite:///{home / 'f.db'}",
        "folds.n_folds=2",
        "train.batch_size=16",
        "train.mixed_precision='off'",  # PyTorch's fp32 predictions are the export's reference
        "gate.fraction=0",  # every run is promoted: a known champion stack for retention
        SETTLED,  # drops are written whole just before each pull
        f'alerts.apprise_urls=["${{env:{ALERT_ENV}}}", "${{env:{DEAD_ENV}}}"]',
        f'alerts.prefect_blocks=["{BLOCK}"]',
        *extra,
    ]


def config_for(home: Path, *extra: str):
    return load_config(CONFIGS / "demo.toml", overrides(home, *extra))


def cli(home: Path, *arguments: str) -> str:
    args = [*arguments, "--config", str(CONFIGS / "demo.toml")]
    args += [part for override in overrides(home, ONE_STAGE) for part in ("--set", override)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Runs 1 (30 px items), 2 and 3 (20 px items), all promoted; run 4 failed at its pull. Alerts go
    to the receiver through Apprise and a Prefect block, and to a closed port: what the receiver got by
    then, by path. A test may train more runs (retention does): the others ask the registry for the
    champion, so that they pass in any order."""
    home = tmp_path_factory.mktemp("operations")
    try:
        with receiving() as receiver, prefect_test_harness(server_startup_timeout=120):
            os.environ[ALERT_ENV] = f"json://127.0.0.1:{receiver.port}/apprise"
            os.environ[DEAD_ENV] = f"json://127.0.0.1:{closed_port()}/nobody"
            CustomWebhookNotificationBlock(
                name="foldwise",
                url=f"http://127.0.0.1:{receiver.port}/block",
                json_data={"subject": "{{subject}}", "body": "{{body}}"},
            ).save(BLOCK.split("/")[1])
            deliver_drop(home / "source", n_images=24)
            summaries = [retrain(config_for(home, OTHER_SIZE))]
            summaries += [retrain(config_for(home, ONE_STAGE), force=True) for _ in range(2)]
            with pytest.raises(Exception, match="no_such_column"):
                retrain(config_for(home, ONE_STAGE, "data.label_column=no_such_column"), force=True)
            sent = {path: receiver.bodies(path) for path in ("/apprise", "/block", "/nobody")}
            yield home, sent, summaries
    finally:
        os.environ.pop(ALERT_ENV, None)
        os.environ.pop(DEAD_ENV, None)


def test_alerts_reach_a_webhook_through_apprise_and_a_prefect_block(trained):
    home, sent, summaries = trained
    assert [s.status for s in summaries] == ["succeeded"] * 3  # the closed port failed no run
    promoted = [f"Foldwise demo: run {s.run_id} is the new champion" for s in summaries]
    promoted[1] += f" (was run {summaries[0].run_id})"
    promoted[2] += f" (was run {summaries[1].run_id})"
    expected = [*promoted, "Foldwise demo: run 4 failed"]
    apprise, block = sent["/apprise"], sent["/block"]
    assert [body["title"] for body in apprise] == expected
    assert [body["type"] for body in apprise] == ["success"] * 3 + ["failure"]
    assert [body["subject"] for body in block] == expected
    assert (
        "promoted: the first model" in apprise[0]["message"] and "Prefect flow run" in apprise[0]["message"]
    )
    assert "no_such_column" in apprise[3]["message"] and block[3]["body"] == apprise[3]["message"]
    assert not sent["/nobody"]

    # The prequential drop's alert (issue 16 item 5 calls it): past the threshold only.
    config = config_for(home, ONE_STAGE)
    last = summaries[2]  # the champion these alerts announced last
    assert prequential_alert(config, 7, 30, last.score_oof - 0.04, last.run_id) is None
    alert = prequential_alert(config, 7, 30, last.score_oof - 0.06, last.run_id)
    assert alert.event == "prequential-drop" and "30 labeled images of pull 7" in alert.body


def test_export_is_one_onnx_model_that_agrees_with_pytorch(trained, tmp_path):
    home, _, _ = trained
    config = config_for(home, ONE_STAGE)
    with session_scope(config.resolved_database_url()) as session:
        champion_id = registry.champion_stack(session=session)[-1]
    output = cli(home, "export", "--out", str(tmp_path / "serving"))
    champion = load_model(config, champion_id)
    assert f"run {champion.run_id} (2 folds, {len(champion.vocab)} labels)" in output
    metadata = json.loads((tmp_path / "serving" / "model.json").read_text())
    assert metadata["labels"] == champion.vocab and metadata["thresholds"] == champion.thresholds.tolist()
    assert metadata["preprocessing"]["item_size"] == 20 and metadata["preprocessing"]["stage_size"] == 16

    # The cached items of every sample, as `foldwise predict` and the gate feed them to PyTorch.
    store = ImageCache(config).store(model_item_size(champion))
    rows = np.arange(len(store.rows))
    expected = ensemble_probabilities(champion, store.pixels(), rows)
    session = onnxruntime.InferenceSession(str(tmp_path / "serving" / "model.onnx"))
    [graph_input], [graph_output] = session.get_inputs(), session.get_outputs()
    assert graph_input.type == "tensor(uint8)" and graph_output.shape[1] == len(champion.vocab)
    got = session.run(None, {graph_input.name: np.ascontiguousarray(store.pixels()[rows])})[0]
    assert np.abs(got - expected).max() < 1e-4
    assert np.ptp(expected, axis=0).max() > 1e-3  # the images make a difference far above the tolerance

    # `--input float` takes the same images as N x 3 x H x W floats in [0, 1].
    folds = fold_modules(champion)
    images = torch.from_numpy(np.array(store.pixels()[:4]))
    with torch.no_grad():
        from_bytes = EnsembleGraph(folds, 16, pretrained=False, input_type="uint8")(images)
        from_floats = EnsembleGraph(folds, 16, pretrained=False, input_type="float")(
            images.permute(0, 3, 1, 2).float() / 255
        )
    assert torch.allclose(from_bytes, from_floats, atol=1e-6)


def test_retention_keeps_the_champion_rollback_target_pins_and_last_runs(trained):
    home, _, summaries = trained
    first, second, third = (s.run_id for s in summaries)
    config = config_for(home, ONE_STAGE)
    url = config.resolved_database_url()
    weights_before = storage_use(config)["weights"]
    first_weights = sum(path.stat().st_size for path in (home / "runs" / str(first)).glob("*.safetensors"))
    assert first_weights > 0 and (home / "cache" / "30px").is_dir()

    dry = cli(home, "gc", "--keep-last", "0", "--dry-run")
    assert f"would remove the files of run(s): {first}" in dry
    assert f"run {third} (champion)" in dry and f"run {second} (a rollback returns to it)" in dry
    assert (home / "runs" / str(first) / "fold0.safetensors").is_file()  # a dry run removes nothing

    cli(home, "pin", str(first), "--reason", "shipped to site A")
    kept = cli(home, "gc", "--keep-last", "0")
    assert f"run {first} (pinned: shipped to site A)" in kept and "removed the files of run(s): none" in kept
    assert f"pinned: run {first} (shipped to site A)" in cli(home, "storage")
    cli(home, "unpin", str(first))
    output = cli(home, "gc", "--keep-last", "0")
    assert f"removed the files of run(s): {first}" in output and f"weights {byte_size(first_weights)}" in output
    assert not (home / "runs" / str(first)).exists() and not (home / "cache" / "30px").exists()
    assert weights_before - storage_use(config)["weights"] == first_weights
    with session_scope(url) as session:
        assert not session.scalars(select(FoldResult).where(FoldResult.run_id == first)).all()
        assert "files removed by retention" in session.get_one(Run, first).notes[-1]
    assert remove_unrecorded_files(config) == []  # nothing the records and the files disagree on
    with pytest.raises(ModelError, match="has no model"):
        load_model(config, first)

    # The step after each run: run 5 becomes champion, run 3 the rollback target, run 2 goes.
    after_each_run = config_for(home, ONE_STAGE, "retention.after_each_run=true", "retention.keep_last=0")
    fifth = retrain(after_each_run, force=True)
    with session_scope(url) as session:
        assert registry.champion_stack(session=session)[-2:] == [third, fifth.run_id]
    assert sorted(int(p.name) for p in (home / "runs").iterdir()) == [third, fifth.run_id]
