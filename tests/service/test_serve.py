"""`foldwise serve` against a real (temporary, loopback) Prefect server, triggered through the API as the UI does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import get_current_settings
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import func, select

from db.models import ClassThreshold, Run
from db.session import session_scope
from flows.deployment import build_deployment
from foldwise.config import build_config, load_config
from tasks.demo import deliver_drop
from tests.conftest import CONFIGS, TINY_TRAINING

pytestmark = pytest.mark.slow
TINY = [*TINY_TRAINING, "service.cron='0 3 * * *'", "service.timezone='Europe/Paris'"]


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield str(get_current_settings().api.url)


@pytest.fixture
def served(tmp_path, prefect_api):
    """A `foldwise serve` process for a tiny demo config; yields (deployment name, database url, source)."""
    name = f"svc-{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    source = tmp_path / "source"
    deliver_drop(source, n_images=32)
    overrides = [
        f"name={name}",
        f"source.path={source}",
        f"data_home={tmp_path}",
        f"database_url={url}",
        *TINY,
    ]
    command = [sys.executable, "-m", "foldwise", "serve", "--config", str(CONFIGS / "demo.toml")]
    command += [part for override in overrides for part in ("--set", override)]
    env = os.environ | {"PREFECT_API_URL": prefect_api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_deployment(f"retrain/{name}", process, tmp_path / "serve.log")
        yield f"retrain/{name}", url, source
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_for_deployment(name: str, process: subprocess.Popen, log_path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"foldwise serve exited:\n{log_path.read_text()}"
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                time.sleep(1)
    raise AssertionError(f"deployment {name} not registered in {timeout}s:\n{log_path.read_text()}")


def test_a_run_triggered_with_edited_parameters_completes_and_records_them(served):
    name, url, _ = served
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
    # What `foldwise serve` registered: the cron schedule, the typed form, one run at a time.
    assert deployment.schedules[0].schedule.cron == "0 3 * * *"
    assert deployment.schedules[0].schedule.timezone == "Europe/Paris"
    assert deployment.global_concurrency_limit.limit == 1 and deployment.enforce_parameter_schema
    assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
    schema = deployment.parameter_openapi_schema
    assert {"config", "force"} <= set(schema["properties"])
    assert schema["definitions"]["FoldsConfig"]["properties"]["n_folds"]["minimum"] == 2

    config = dict(deployment.parameters["config"])
    config["thresholds"] = config["thresholds"] | {"beta": 1.0, "min_positives": 2}
    flow_run = run_deployment(name, parameters={"config": config, "force": False}, timeout=600)
    assert flow_run.state.is_completed(), flow_run.state

    with session_scope(url) as session:
        run = session.scalar(select(Run))
        assert run.status == "succeeded" and run.flow_run_id == str(flow_run.id)
        assert run.config["thresholds"]["beta"] == 1.0 and run.config["thresholds"]["min_positives"] == 2
        assert run.beta == 1.0
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    by_type = {artifact.type: artifact for artifact in artifacts}
    assert set(by_type) == {"markdown", "table"}
    summary = by_type["markdown"].data
    assert f"Run {run.id} of {name.split('/')[1]}: succeeded" in summary
    assert "OOF F1 (per-class thresholds)" in summary and "F2" not in summary  # the edited beta
    table = json.loads(by_type["table"].data)
    with session_scope(url) as session:
        thresholds = {t.label: t.threshold for t in session.scalars(select(ClassThreshold))}
    assert {row["label"]: row["threshold"] for row in table} == pytest.approx(thresholds, abs=5e-4)


def test_an_invalid_parameter_is_refused_before_a_run_starts(served):
    name, url, _ = served
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
        for bad in ({"folds": {"n_folds": 1}}, {"folds": {"n_fold": 3}}, {"train": {"device": "tpu"}}):
            config = deployment.parameters["config"] | bad
            with pytest.raises(PrefectHTTPStatusError, match="409|422"):
                client.create_flow_run_from_deployment(deployment.id, parameters={"config": config})
        assert not [run for run in client.read_flow_runs() if run.deployment_id == deployment.id]
    with session_scope(url) as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_two_simultaneous_triggers_never_train_at_once(served):
    name, url, _ = served
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
        flow_runs = [
            client.create_flow_run_from_deployment(deployment.id, parameters={"force": True})
            for _ in range(2)
        ]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = [client.read_flow_run(run.id).state for run in flow_runs]
            if all(state.is_final() for state in states):
                break
            time.sleep(2)
    assert all(state.is_completed() for state in states), states
    with session_scope(url) as session:
        runs = session.scalars(select(Run).order_by(Run.claimed_at)).all()
        assert [r.status for r in runs] == ["succeeded", "succeeded"]
        assert {r.flow_run_id for r in runs} == {str(run.id) for run in flow_runs}
        first, second = runs
        assert first.finished_at <= second.claimed_at  # the second trained only after the first ended


def test_prefect_yaml_deploys_the_same_deployment_as_serve(prefect_api, tmp_path):
    """`prefect deploy` of prefect.yaml, for work-pool users, matches what `foldwise serve` registers."""
    repo = CONFIGS.parent
    spec = yaml.safe_load((repo / "prefect.yaml").read_text())["deployments"][0]
    shipped = load_config(CONFIGS / "demo.toml", ["service.cron='0 3 * * *'"])
    in_yaml = build_config(spec["parameters"]["config"], repo, "prefect.yaml")  # cwd: the repo
    assert in_yaml == shipped
    served = build_deployment(shipped)

    env = os.environ | {"PREFECT_API_URL": prefect_api, "FOLDWISE_REPO": str(repo)}
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    for command in (["work-pool", "create", "foldwise", "--type", "process"], ["deploy", "--all"]):
        result = subprocess.run(
            prefect + command, cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
    with get_client(sync_client=True) as client:
        deployed = client.read_deployment_by_name("retrain/demo")
    assert deployed.work_pool_name == "foldwise" and deployed.enforce_parameter_schema
    assert deployed.schedules[0].schedule.cron == served.schedules[0].schedule.cron
    assert deployed.schedules[0].schedule.timezone == served.schedules[0].schedule.timezone
    assert deployed.global_concurrency_limit.limit == served.concurrency_limit
    assert deployed.concurrency_options.collision_strategy == served.concurrency_options.collision_strategy
    assert deployed.parameter_openapi_schema == served._parameter_openapi_schema.model_dump(exclude_none=True)
