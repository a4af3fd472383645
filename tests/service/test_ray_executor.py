"""Folds on Ray (`service.executor = "ray"`) on this 2-core machine, with a real Prefect server: on a
local cluster of the run's own two folds train at the same time and give exactly what the local
executor gives; a fold's timeout fails the run as it does locally; on a cluster the run joins
(`ray start --head`), a run that times out cancels its folds before it frees the lock.
"""

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from foldwise.config import ConfigError
from foldwise.db.models import Epoch, FoldResult, Prediction, Run, RunMetric, TrainingLock
from foldwise.db.session import session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.ray_folds import FoldLost, fold_resources
from foldwise.tasks.runs import TimedOut
from tests.conftest import tiny_demo_config

ray = pytest.importorskip("ray")
ON_RAY = "service.executor=ray"
NO_GATE = "gate.fraction=0"  # every sample in a fold
# bf16 autocast on the CPU (`mixed_precision = "on"`) does not repeat itself, even twice in one
# process (measured: probabilities up to 1.5e-3 apart, on these 48 images OOF F2 0.41 against 0.27),
# so the executors are compared in fp32, which repeats to the last bit.
FP32 = "train.mixed_precision=off"


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def fold_rows(url: str, run_id: int) -> list[FoldResult]:
    with session_scope(url) as session:
        query = select(FoldResult).where(FoldResult.run_id == run_id).order_by(FoldResult.fold)
        return list(session.scalars(query))


def oof_predictions(url: str, run_id: int) -> dict[int, list[float]]:
    with session_scope(url) as session:
        rows = session.scalars(select(Prediction).where(Prediction.run_id == run_id, Prediction.split == "oof"))
        return {row.sample_id: row.probabilities for row in rows}


def fold_task_runs(url: str, run_id: int) -> dict[str, list[str]]:
    """The sub-flows of the run's Prefect flow run, by flow name, with the names of their task runs."""
    with session_scope(url) as session:
        flow_run_id = session.get_one(Run, run_id).flow_run_id
    with get_client(sync_client=True) as client:
        children = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        subflows = {}
        for child in client.read_flow_runs(flow_run_filter=children):
            tasks = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[child.id]))
            )
            subflows[client.read_flow(child.flow_id).name] = sorted(task_run.name for task_run in tasks)
    return subflows


def lock_is_free(url: str) -> bool:
    with session_scope(url) as session:
        return session.scalar(select(TrainingLock)) is None


@pytest.mark.slow
def test_folds_train_at_once_on_ray_with_the_local_executors_results(prefect_server, tmp_path, database_url):
    deliver_drop(tmp_path / "source", n_images=48)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Ray gives each fold (ray.num_cpus = 1): the same sums in the same order
    try:
        here = retrain(tiny_demo_config(tmp_path, database_url, NO_GATE, FP32))
    finally:
        torch.set_num_threads(threads)
    on_ray = retrain(tiny_demo_config(tmp_path, database_url, NO_GATE, FP32, ON_RAY), force=True)
    assert here.status == on_ray.status == "succeeded"

    # Both folds trained (not reused) at the same time: each started before the other ended.
    ray_folds = fold_rows(database_url, on_ray.run_id)
    assert [(row.fold, row.reused_from_run_id) for row in ray_folds] == [(0, None), (1, None)]
    assert max(row.started_at for row in ray_folds) < min(row.finished_at for row in ray_folds)
    local_folds = fold_rows(database_url, here.run_id)
    assert local_folds[0].finished_at <= local_folds[1].started_at  # the local executor: one after another
    with session_scope(database_url) as session:
        phases = session.get_one(Run, on_ray.run_id).phase_seconds
    assert {"fold 0 training", "fold 1 training", "fold 0 prediction", "fold 1 prediction"} <= set(phases)
    assert lock_is_free(database_url)
    # Either way the folds are tasks of the run's `train-folds` sub-flow (on Ray, on its RayTaskRunner).
    for run in (here, on_ray):
        assert fold_task_runs(database_url, run.run_id) == {"train-folds": ["train-fold-0", "train-fold-1"]}

    # Same data, folds, seeds and thread count: the same models, so the same predictions and scores
    # to the last digit. (With the local run on 2 threads, probabilities differed by up to 1e-3.)
    local_oof, ray_oof = oof_predictions(database_url, here.run_id), oof_predictions(database_url, on_ray.run_id)
    assert len(local_oof) == 48 and local_oof == ray_oof
    with session_scope(database_url) as session:
        scores = {m.run_id: m.score for m in session.scalars(select(RunMetric).where(RunMetric.split == "oof"))}
    assert scores[on_ray.run_id] == scores[here.run_id] == on_ray.score_oof


@pytest.mark.slow
def test_a_fold_timeout_on_ray_fails_the_run_and_frees_the_lock(prefect_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    config = tiny_demo_config(tmp_path, url, ON_RAY, "train.fold_timeout_minutes=0.001")
    deliver_drop(config.source.path, n_images=32)
    with pytest.raises(TimedOut, match=r"fold \d timed out after 0.001 minutes \(train.fold_timeout_minutes\)"):
        retrain(config)
    with session_scope(url) as session:
        run = session.scalar(select(Run))
        assert run.status == "failed" and "train.fold_timeout_minutes" in run.reason
    assert lock_is_free(url)


def kill_the_worker_of_the_second_fold(url: str, stop: threading.Event) -> None:
    """SIGKILL the Ray worker that trains the second fold (one at a time), once it has begun: one fold
    is recorded and the other one has recorded an epoch."""
    while not stop.wait(0.1):
        try:
            with session_scope(url) as session:
                folds_with_epochs = session.scalar(select(func.count(Epoch.fold.distinct())))
                if folds_with_epochs < 2 or session.scalar(select(func.count()).select_from(FoldResult)) != 1:
                    continue
        except OperationalError:  # the run has not created the schema yet
            continue
        for process in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "ray::train-fold" in " ".join(process.cmdline()):
                    process.kill()
                    return


@pytest.mark.slow
def test_a_fold_lost_with_its_worker_fails_the_run_and_the_next_run_resumes(prefect_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    one_at_a_time = "ray.num_cpus=2"  # on 2 CPUs
    longer = "train.stages=[{size=16, epochs=1, lr=1e-2}, {size=32, epochs=5, lr=1e-3}]"  # time to kill it
    config = tiny_demo_config(tmp_path, url, ON_RAY, one_at_a_time, longer)
    deliver_drop(config.source.path, n_images=32)
    stop = threading.Event()
    killer = threading.Thread(target=kill_the_worker_of_the_second_fold, args=(url, stop))
    killer.start()
    try:
        with pytest.raises(FoldLost, match=r"fold \d was lost on the Ray cluster \(\w+Error: .*the next run trains") as lost:
            retrain(config)
    finally:
        stop.set()
        killer.join()
    assert lock_is_free(url)
    [recorded] = fold_rows(url, 1)
    assert f"fold {1 - recorded.fold} was lost" in str(lost.value)
    resumed = retrain(config)
    assert resumed.status == "succeeded"
    reused = {row.fold: row.reused_from_run_id for row in fold_rows(url, resumed.run_id)}
    assert reused == {recorded.fold: 1, 1 - recorded.fold: None}  # the recorded fold reused, the lost one trained
    with session_scope(url) as session:
        assert session.get_one(Run, 1).status == "failed"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path) -> Iterator[str]:
    """A Ray cluster of 2 CPUs started beside the run with `ray start --head`. Without token
    authentication (Ray's default): Ray reads RAY_AUTH_MODE when it is imported, before a test can
    set it for the run."""
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "ray-head.log"
    command = [Path(sys.executable).parent / "ray", "start", "--head", "--block", f"--port={address.split(':')[1]}"]
    command += ["--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"]
    with log.open("w") as output:
        environment = os.environ | {"RAY_AUTH_MODE": "disabled"}
        head = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield address
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        head.wait(timeout=60)


@pytest.mark.slow
def test_a_run_that_times_out_on_a_joined_cluster_cancels_its_folds_first(prefect_server, tmp_path, ray_cluster):
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    config = tiny_demo_config(
        tmp_path,
        url,
        ON_RAY,
        f"ray.address={ray_cluster!r}",
        "service.run_timeout_minutes=0.5",
        "train.stages=[{size=32, epochs=1000, lr=1e-3}]",  # far longer than the run may last
    )
    deliver_drop(config.source.path, n_images=48)
    with pytest.raises(TimedOut, match=r"timed out after 0.5 minutes \(service.run_timeout_minutes\)"):
        retrain(config)
    assert lock_is_free(url)
    # The folds were stopped before the lock was freed: the cluster is idle and no fold is recorded
    # afterwards.
    ray.init(address=ray_cluster)
    try:
        assert ray.available_resources().get("CPU") == 2
    finally:
        ray.shutdown()
    time.sleep(2)
    with session_scope(url) as session:
        assert session.scalar(select(func.count()).select_from(FoldResult)) == 0
        assert session.scalar(select(Run.status)) == "failed"


def test_ray_settings_are_checked(tmp_path):
    url = f"sqlite:///{tmp_path / 'foldwise.db'}"
    with pytest.raises(ConfigError, match="ray.num_gpus: .*a fraction of one GPU, or whole GPUs"):
        tiny_demo_config(tmp_path, url, "ray.num_gpus=1.5")
    with pytest.raises(ConfigError, match="on Ray a fold sees only the GPUs Ray gives it"):
        tiny_demo_config(tmp_path, url, ON_RAY, "train.device='cuda:1'")
    config = tiny_demo_config(tmp_path, url, ON_RAY, "ray.num_gpus=0.5")
    assert fold_resources(config, {"CPU": 16.0, "GPU": 1.0}) == {"num_cpus": 1.0, "num_gpus": 0.5}
    # Unset: a GPU per fold where the cluster has GPUs, none where it has none or the device is the CPU.
    automatic = tiny_demo_config(tmp_path, url, ON_RAY)
    assert fold_resources(automatic, {"CPU": 4.0, "GPU": 2.0})["num_gpus"] == 1.0
    assert fold_resources(automatic, {"CPU": 4.0})["num_gpus"] == 0.0
    on_cpu = tiny_demo_config(tmp_path, url, ON_RAY, "train.device='cpu'")
    assert fold_resources(on_cpu, {"CPU": 4.0, "GPU": 2.0})["num_gpus"] == 0.0
    # A local cluster too small for one fold never starts one; a joined one may grow (autoscaling).
    with pytest.raises(ConfigError, match=r"each fold reserves 4 CPU \(ray.num_cpus\) but the Ray cluster has 2"):
        fold_resources(tiny_demo_config(tmp_path, url, ON_RAY, "ray.num_cpus=4"), {"CPU": 2.0})
    joined = tiny_demo_config(tmp_path, url, ON_RAY, "ray.num_cpus=4", "ray.address='auto'")
    assert fold_resources(joined, {"CPU": 2.0}) == {"num_cpus": 4.0, "num_gpus": 0.0}
