"""`foldwise serve` against a real `prefect server start` on loopback: the schedule fires, runs triggered
through the API as the UI does, refusals without a server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import func, select, update

from foldwise.config import load_config
from foldwise.db.models import ClassThreshold, Run
from foldwise.db.session import session_scope
from foldwise.flows.deployment import build_deployment
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.liveness import process_start
from foldwise.tasks.runs import claim_training, start_run
from tests.conftest import CONFIGS, TINY_TRAINING, tiny_demo_config

pytestmark = pytest.mark.slow
TINY = [*TINY_TRAINING, "service.cron='0 3 * * *'", "service.timezone='Europe/Paris'"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_prefect_server(home: Path, **settings: str) -> Iterator[tuple[str, Path]]:
    """A real `prefect server start` (API, UI, scheduler) with its own PREFECT_HOME and database.
    Yields its API URL and its log; the test process's Prefect client points at it meanwhile."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    # The scheduler's loop is 60 s by default: 5 s lets the schedule test see the server create runs
    # (and the runner start them) within one interval, instead of one more minute per loop.
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", **settings}
    log_path = home / "server.log"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while not answers(f"{api_url}/health"):
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield api_url, log_path
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def prefect_api(prefect_server) -> str:
    return prefect_server[0]


def start_serve(tmp_path, prefect_api, *extra: str) -> tuple[subprocess.Popen, str, str, Path]:
    """A `foldwise serve` process for a tiny demo config with 32 images delivered: (process, deployment
    name, database url, its log)."""
    name = f"svc-{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    source = tmp_path / "source"
    deliver_drop(source, n_images=32)
    overrides = [
        f"name={name}",
        f"source.path={source}",
        f"data_home={tmp_path}",
        f"database_url={url}",
        *extra,
    ]
    command = [sys.executable, "-m", "foldwise", "serve", "--config", str(CONFIGS / "demo.toml")]
    command += [part for override in overrides for part in ("--set", override)]
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, env=os.environ | {"PREFECT_API_URL": prefect_api}, stdout=log, stderr=subprocess.STDOUT
        )
    return process, f"retrain/{name}", url, log_path


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def served(tmp_path, prefect_api):
    """A `foldwise serve` process for a tiny demo config; yields (deployment name, database url, source)."""
    process, name, url, log_path = start_serve(tmp_path, prefect_api, *TINY)
    try:
        wait_for_deployment(name, process, log_path)
        yield name, url, tmp_path / "source"
    finally:
        stop(process)


def wait_for_deployment(name: str, process: subprocess.Popen, log_path, timeout: float = 120):
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"foldwise serve exited:\n{log_path.read_text()}"
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                time.sleep(1)
    raise AssertionError(f"deployment {name} not registered in {timeout}s:\n{log_path.read_text()}")


def test_the_schedule_fires_runs_that_execute_and_record_foldwise_runs(prefect_server, tmp_path):
    """What issue 11 found broken (Prefect's scheduler on SQLAlchemy 2.1 created no run): the server's
    own scheduler creates the runs of a one-minute interval, `foldwise serve` executes them."""
    api_url, server_log = prefect_server
    process, name, url, log_path = start_serve(
        tmp_path, api_url, *TINY_TRAINING, "service.interval_minutes=1"
    )
    try:
        deployment = wait_for_deployment(name, process, log_path)
        of_deployment = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]))
        deadline = time.monotonic() + 200
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                flow_runs = client.read_flow_runs(flow_run_filter=of_deployment)
                done = sorted(
                    (run for run in flow_runs if run.state.is_final()),
                    key=lambda run: run.expected_start_time,
                )
                if len(done) >= 2:
                    break
                time.sleep(2)
    finally:
        stop(process)
    output = log_path.read_text()
    assert len(done) >= 2, f"{flow_runs}\n{output}\n{server_log.read_text()[-3000:]}"
    assert all(run.auto_scheduled and run.state.is_completed() for run in done), f"{done}\n{output}"
    assert f"Prefect UI: {api_url.removesuffix('/api')}/deployments/deployment/{deployment.id}" in output
    assert "next scheduled run: " in output and "created no scheduled run" not in output, output
    # SIGTERM stopped serving cleanly and paused the schedule: no runs pile up while nothing serves them.
    assert "Traceback" not in output, output
    with get_client(sync_client=True) as client:
        assert client.read_deployment(deployment.id).paused

    with session_scope(url) as session:
        recorded = {run.flow_run_id: run.status for run in session.scalars(select(Run))}
    first, second = (recorded.get(str(run.id)) for run in done[:2])
    assert (first, second) == ("succeeded", "skipped"), recorded  # the second found no new data


def test_serve_warns_when_the_server_creates_no_scheduled_run(tmp_path):
    """A server whose scheduler does not run (here: turned off; in issue 11: failing on every loop)."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    with running_prefect_server(home, PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false") as (api_url, _):
        process, name, _, log_path = start_serve(tmp_path, api_url, *TINY)
        try:
            wait_for_deployment(name, process, log_path)
            deadline = time.monotonic() + 60  # two 5 s loops and the margin
            while "created no scheduled run" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(1)
        finally:
            stop(process)
    output = log_path.read_text()
    assert f"warning: the Prefect server created no scheduled run of {name} in 20s" in output, output
    assert "look at the server's log" in output and "next scheduled run" not in output


def test_serve_marks_the_runs_a_restart_left_running_crashed_at_once(tmp_path, prefect_api):
    """A restarted container: same hostname, the dead run's PID now another process's (here a live
    `sleep`); and a run whose process is gone. Both crashed before serving; another host's live run not."""
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    config = tiny_demo_config(tmp_path, url)
    restarted, ended, elsewhere = start_run(config), start_run(config), start_run(config)
    assert claim_training(config, restarted).train
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        with session_scope(url) as session:
            session.execute(
                update(Run)
                .where(Run.id == restarted)
                .values(pid=sleeper.pid, process_start=process_start(os.getpid()))
            )
            session.execute(update(Run).where(Run.id == ended).values(pid=finished.pid))
            session.execute(update(Run).where(Run.id == elsewhere).values(host="gpu-7"))
        process, name, _, log_path = start_serve(tmp_path, prefect_api, *TINY)
        try:
            wait_for_deployment(name, process, log_path)
        finally:
            stop(process)
    finally:
        sleeper.kill()
        sleeper.wait()
    with session_scope(url) as session:
        status = {run.id: run.status for run in session.scalars(select(Run))}
    assert status == {restarted: "crashed", ended: "crashed", elsewhere: "running"}
    output = log_path.read_text()
    assert f"run {restarted} was left running by a process that is gone: marked crashed" in output, output


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
    assert "OOF F1 (samples), cross-fitted" in summary and "F2" not in summary  # the edited beta
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
        # Only the runs the server's scheduler made for the cron schedule, none from the refused calls.
        assert all(
            run.auto_scheduled for run in client.read_flow_runs() if run.deployment_id == deployment.id
        )
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
    """`prefect deploy` of prefect.yaml, for work-pool users, matches what `foldwise serve` registers, on
    a process pool and on a Docker pool (its job variables checked by the server against the pool's
    template; no Docker needed). Each names its config file, which must load."""
    repo = CONFIGS.parent
    specs = {
        spec["name"]: spec for spec in yaml.safe_load((repo / "prefect.yaml").read_text())["deployments"]
    }
    assert set(specs) == {"demo", "demo-docker"}
    assert specs["demo"]["parameters"]["config_file"] == "configs/demo.toml"  # relative to the checkout
    shipped = load_config(repo / specs["demo"]["parameters"]["config_file"], ["service.cron='0 3 * * *'"])
    served = build_deployment(shipped)

    env = os.environ | {"PREFECT_API_URL": prefect_api, "FOLDWISE_REPO": str(repo)}
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    for command in (
        ["work-pool", "create", "foldwise", "--type", "process"],
        ["work-pool", "create", "foldwise-docker", "--type", "docker"],
        ["deploy", "--all"],
    ):
        result = subprocess.run(
            prefect + command, cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
    with get_client(sync_client=True) as client:
        process = client.read_deployment_by_name("retrain/demo")
        docker = client.read_deployment_by_name("retrain/demo-docker")
    assert process.work_pool_name == "foldwise" and docker.work_pool_name == "foldwise-docker"
    for deployed in (process, docker):
        assert deployed.entrypoint == "foldwise.flows.retrain:retrain" and deployed.enforce_parameter_schema
        assert deployed.schedules[0].schedule.cron == served.schedules[0].schedule.cron
        assert deployed.schedules[0].schedule.timezone == served.schedules[0].schedule.timezone
        assert deployed.global_concurrency_limit.limit == served.concurrency_limit
        assert (
            deployed.concurrency_options.collision_strategy == served.concurrency_options.collision_strategy
        )
        # The same form; `serve` passes `config`, so its schema may list it as required.
        schema = served._parameter_openapi_schema.model_dump(exclude_none=True)
        if not schema.get("required"):
            schema.pop("required", None)
        deployed_schema = dict(deployed.parameter_openapi_schema)
        if not deployed_schema.get("required"):
            deployed_schema.pop("required", None)
        assert deployed_schema == schema
    # Each run's working directory: the checkout (FOLDWISE_REPO when deployed); /data, the image's volume.
    assert process.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(repo)
    assert docker.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/data"
    assert docker.job_variables["image"] == "foldwise:cpu"
    assert "${secret:foldwise-db-password}" in docker.job_variables["env"]["FOLDWISE_DATABASE_URL"]
    # The Docker run's config: the stack's demo file, mounted where its config_file parameter points.
    assert specs["demo-docker"]["parameters"]["config_file"] == "/config/foldwise.toml"
    assert f"{repo}/docker/demo.toml:/config/foldwise.toml:ro" in docker.job_variables["volumes"]
    assert load_config(repo / "docker" / "demo.toml").data_home == Path("/data/demo")
