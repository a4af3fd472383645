"""Crashes, races and hangs, the way they happen: a real `foldwise run` process killed with SIGKILL at
six points, processes racing for the training lock, runs that time out. After each, the next run
completes, reuses every finished fold, gates what was left ungated, and the invariants hold."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.settings import get_current_settings
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import select

from foldwise.db import registry
from foldwise.db.models import FoldResult, ModelDecision, Run, TrainingLock
from foldwise.db.session import ensure_schema, session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.runs import claim_training, end_run, start_run
from tests.conftest import CONFIGS, ROOT, TINY_TRAINING, tiny_demo_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield str(get_current_settings().api.url)


def overrides(tmp_path: Path, url: str) -> list[str]:
    return [
        f"source.path={tmp_path / 'source'}",
        f"data_home={tmp_path}",
        f"database_url={url}",
        *TINY_TRAINING,
    ]


def start_stopped_run(
    tmp_path, url, prefect_api, point, seconds=600.0, *extra
) -> tuple[subprocess.Popen, Path]:
    """A real `foldwise run` that stops at `point` (tests/service/faults.py) and waits there."""
    marker = tmp_path / f"reached-{point}"
    command = [sys.executable, "-m", "tests.service.faults", point, str(marker), str(seconds), "--"]
    command += ["run", "--config", str(CONFIGS / "demo.toml")]
    command += [part for override in [*overrides(tmp_path, url), *extra] for part in ("--set", override)]
    env = os.environ | {"PREFECT_API_URL": prefect_api}
    log = (tmp_path / f"{point}.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"never reached {point}:\n{(tmp_path / f'{point}.log').read_text()}")
        time.sleep(0.1)
    return process, marker


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def assert_invariants(url: str, data_home: Path) -> None:
    """No run left running, no lock left, one champion once a model exists, files <-> records."""
    with session_scope(url) as session:
        runs = session.scalars(select(Run)).all()
        assert [r.id for r in runs if r.status == "running"] == []
        assert session.scalar(select(TrainingLock)) is None
        champion = registry.current_champion(session=session)
        succeeded = {r.id for r in runs if r.status == "succeeded"}
        if succeeded:
            assert champion in succeeded
        recorded = {
            Path(path)
            for row in session.scalars(select(FoldResult))
            for path in (row.weights_path, row.predictions_path)
        }
    assert all(path.is_file() for path in recorded)
    on_disk = {path for path in (data_home / "runs").rglob("*") if path.is_file()}
    models = {data_home / "runs" / str(run_id) / "model.json" for run_id in succeeded}
    assert on_disk == recorded | models


KILL_POINTS = ["ingest", "folds", "mid-epoch", "between-folds", "thresholds", "gate"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_at_any_point_leaves_a_state_the_next_run_completes(
    point, tmp_path, database_url, prefect_api
):
    deliver_drop(tmp_path / "source", n_images=48)
    ensure_schema(database_url)
    process, _ = start_stopped_run(tmp_path, database_url, prefect_api, point)
    kill(process)
    with session_scope(database_url) as session:
        killed = session.scalar(select(Run).order_by(Run.id))
        finished_folds = session.scalars(select(FoldResult.fold).where(FoldResult.run_id == killed.id)).all()
        assert killed.status == ("succeeded" if point == "gate" else "running")
    assert finished_folds == {
        "mid-epoch": [0],
        "between-folds": [0],
        "thresholds": [0, 1],
        "gate": [0, 1],
    }.get(point, [])

    summary = retrain(tiny_demo_config(tmp_path, database_url))
    assert_invariants(database_url, tmp_path)
    with session_scope(database_url) as session:
        killed = session.get_one(Run, killed.id)
        next_run = session.get_one(Run, summary.run_id)
        decisions = session.scalars(select(ModelDecision)).all()
        reused = dict(
            session.execute(
                select(FoldResult.fold, FoldResult.reused_from_run_id).where(FoldResult.run_id == next_run.id)
            ).all()
        )
    if point == "gate":  # its results were recorded: the next run gates it, then has nothing new
        assert killed.status == "succeeded"
        assert [(d.candidate_run_id, d.promoted) for d in decisions] == [(killed.id, True)]
        assert summary.status == "skipped" and f"no new data since run {killed.id}" in summary.reason
        return
    assert killed.status == "crashed" and f"process {process.pid}" in killed.reason
    assert summary.status == "succeeded"
    assert [(d.candidate_run_id, d.promoted) for d in decisions] == [(next_run.id, True)]
    assert {fold for fold, source in reused.items() if source == killed.id} == set(finished_folds)
    for fold in finished_folds:
        assert f"fold {fold} reused from run {killed.id}" in " ".join(next_run.notes)


def test_a_run_started_during_the_gate_waits_and_never_trains_at_the_same_time(
    tmp_path, database_url, prefect_api
):
    deliver_drop(tmp_path / "source", n_images=48)
    ensure_schema(database_url)
    first, _ = start_stopped_run(tmp_path, database_url, prefect_api, "gate-scoring", 6.0)
    skipper = tiny_demo_config(tmp_path, database_url, "service.when_busy=skip")
    skipped = retrain(skipper, force=True)
    assert skipped.status == "skipped" and "run 1 is training" in skipped.reason
    waiter = retrain(tiny_demo_config(tmp_path, database_url), force=True)  # when_busy = "wait"
    assert first.wait(timeout=120) == 0
    with session_scope(database_url) as session:
        gated = session.scalar(select(ModelDecision).where(ModelDecision.candidate_run_id == 1))
        second = session.get_one(Run, waiter.run_id)
    assert waiter.status == "succeeded" and second.claimed_at >= gated.decided_at
    assert_invariants(database_url, tmp_path)


def race_for_the_lock(url: str, data_home: str, rounds: int, barrier, results) -> None:
    config = tiny_demo_config(Path(data_home), url, "service.when_busy=skip")
    for _ in range(rounds):
        run_id = start_run(config)
        barrier.wait()
        won = claim_training(config, run_id, poll_seconds=0.01).train
        results.put(won)
        barrier.wait()  # both have tried; the winner lets go
        end_run(config, run_id, None)
        barrier.wait()


def test_tight_claim_races_have_one_winner_each_and_no_crash(tmp_path, database_url):
    ensure_schema(database_url)
    context = multiprocessing.get_context("spawn")
    rounds, barrier, results = 25, context.Barrier(2, timeout=60), context.Queue()
    racers = [
        context.Process(
            target=race_for_the_lock, args=(database_url, str(tmp_path), rounds, barrier, results)
        )
        for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=300)
    assert [racer.exitcode for racer in racers] == [0, 0]
    outcomes = [results.get(timeout=5) for _ in range(2 * rounds)]
    assert outcomes.count(True) == rounds  # one winner per round
    with session_scope(database_url) as session:
        assert session.scalar(select(TrainingLock)) is None


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "train.fold_timeout_minutes=0.01",
            "fold 0 timed out after 0.01 minutes (train.fold_timeout_minutes)",
        ),
        ("service.run_timeout_minutes=0.05", "timed out after 0.05 minutes (service.run_timeout_minutes)"),
    ],
)
def test_a_run_that_takes_too_long_fails_and_frees_the_lock(tmp_path, prefect_api, setting, message):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    deliver_drop(tmp_path / "source", n_images=48)
    long_stages = "train.stages=[{size=32, epochs=50, lr=1e-3}]"
    with pytest.raises(TimeoutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        retrain(tiny_demo_config(tmp_path, url, long_stages, setting))
    with session_scope(url) as session:
        run = session.scalar(select(Run))
        assert run.status == "failed" and message in run.reason
    assert retrain(tiny_demo_config(tmp_path, url)).status == "succeeded"
    assert_invariants(url, tmp_path)
