"""The DB training lock, heartbeats and crashed runs: the rules hold outside Prefect deployments too."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from prefect.settings import get_current_settings
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import select, update

from foldwise.db import training as training_store
from foldwise.db.models import Epoch, Run, TrainingLock, utcnow
from foldwise.db.session import ensure_schema, session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks import ingest as ingest_module
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.label_files import IngestError
from foldwise.tasks.runs import (
    Busy,
    claim_training,
    end_run,
    heartbeat,
    mark_crashed_runs,
    start_run,
    training_lock,
)
from tests.conftest import CONFIGS, TINY_TRAINING, tiny_demo_config

TINY = TINY_TRAINING


def config_for(tmp_path, database_url, *extra):
    return tiny_demo_config(tmp_path, database_url, *extra)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_one_claim_at_a_time_released_when_the_holder_ends(tmp_path, database_url):
    config = config_for(tmp_path, database_url, "service.when_busy=skip")
    holder, other = start_run(config), start_run(config)
    assert claim_training(config, holder).train
    refused = claim_training(config, other)
    assert not refused.train and f"run {holder} is training" in refused.reason
    end_run(config, holder, None)
    with session_scope(database_url) as session:
        assert session.scalar(select(TrainingLock)) is None
    assert claim_training(config, other).train
    with session_scope(database_url) as session:
        assert session.get_one(Run, other).claimed_at is not None


def test_a_live_holder_keeps_the_lock_whatever_its_run_status(tmp_path, database_url):
    """A run that recorded its results is still gating: its lock is not handed over."""
    config = config_for(tmp_path, database_url, "service.when_busy=skip")
    gating, next_run = start_run(config), start_run(config)
    assert claim_training(config, gating).train
    with session_scope(database_url) as session:
        training_store.finish_run(session=session, run_id=gating, status=training_store.SUCCEEDED)
    refused = claim_training(config, next_run)
    assert not refused.train and f"run {gating} is training" in refused.reason


def test_the_lock_of_a_dead_holder_is_taken_over(tmp_path, database_url):
    config = config_for(tmp_path, database_url, "service.when_busy=skip")
    dead, next_run, elsewhere = start_run(config), start_run(config), start_run(config)
    assert claim_training(config, dead).train
    with session_scope(database_url) as session:  # its process is gone
        session.execute(update(TrainingLock).values(pid=dead_pid()))
        session.execute(update(Run).where(Run.id == dead).values(pid=dead_pid()))
    assert claim_training(config, next_run).train
    with session_scope(database_url) as session:
        assert session.get_one(Run, dead).status == "crashed"
        assert session.scalar(select(TrainingLock)).holder == f"run {next_run}"
        # On another host only the heartbeat tells: fresh, it is alive; stale, it is taken over.
        session.execute(update(TrainingLock).values(host="gpu-7"))
    assert not claim_training(config, elsewhere).train
    with session_scope(database_url) as session:
        session.execute(update(TrainingLock).values(heartbeat_at=utcnow() - timedelta(minutes=30)))
    assert claim_training(config, elsewhere).train


def test_ingest_and_promotions_by_hand_wait_for_the_lock(tmp_path, database_url):
    config = config_for(tmp_path, database_url, "service.when_busy=skip")
    holder = start_run(config)
    assert claim_training(config, holder).train
    with pytest.raises(Busy, match=f"run {holder} is training .*try again"):
        with training_lock(config, "foldwise ingest"):
            pass
    end_run(config, holder, None)
    with training_lock(config, "foldwise ingest"):
        with session_scope(database_url) as session:
            assert session.scalar(select(TrainingLock)).holder.startswith("foldwise ingest (pid")
        refused = claim_training(config, start_run(config))
        assert not refused.train and "foldwise ingest (pid" in refused.reason
    with session_scope(database_url) as session:
        assert session.scalar(select(TrainingLock)) is None


def test_a_waiting_run_claims_when_the_holder_ends_or_gives_up_in_time(tmp_path, database_url):
    config = config_for(tmp_path, database_url)  # service.when_busy = "wait"
    holder, waiter = start_run(config), start_run(config)
    assert claim_training(config, holder).train

    def finish_holder():
        time.sleep(1.0)
        end_run(config, holder, None)

    finisher = threading.Thread(target=finish_holder)
    started = time.monotonic()
    finisher.start()
    assert claim_training(config, waiter, poll_seconds=0.1).train
    finisher.join()
    assert time.monotonic() - started >= 1.0

    impatient = config_for(tmp_path, database_url, "service.wait_timeout_minutes=0.005")
    late = start_run(impatient)
    given_up = claim_training(impatient, late, poll_seconds=0.05)
    assert (
        not given_up.train and f"run {waiter} is training" in given_up.reason and "gave up" in given_up.reason
    )


def test_runs_of_dead_processes_are_marked_crashed_and_live_ones_are_not(tmp_path, database_url):
    config = config_for(tmp_path, database_url)
    killed, elsewhere_stale, elsewhere_fresh, alive = (start_run(config) for _ in range(4))
    old = utcnow() - timedelta(minutes=30)
    with session_scope(database_url) as session:
        session.execute(update(Run).where(Run.id == killed).values(pid=dead_pid()))
        session.execute(update(Run).where(Run.id == elsewhere_stale).values(host="gpu-7", heartbeat_at=old))
        session.execute(update(Run).where(Run.id == elsewhere_fresh).values(host="gpu-8"))

    assert mark_crashed_runs(config) == [killed, elsewhere_stale]
    with session_scope(database_url) as session:
        status = {r.id: (r.status, r.reason) for r in session.scalars(select(Run))}
    assert status[killed][0] == "crashed" and "stopped without finishing" in status[killed][1]
    assert status[elsewhere_stale][0] == "crashed" and "on gpu-7" in status[elsewhere_stale][1]
    assert status[elsewhere_fresh][0] == status[alive][0] == "running"


def test_heartbeat_keeps_a_long_run_fresh(tmp_path, database_url):
    config = config_for(tmp_path, database_url)
    run_id = start_run(config)
    with session_scope(database_url) as session:
        session.execute(
            update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    assert claim_training(config, run_id).train
    with session_scope(database_url) as session:
        session.execute(update(TrainingLock).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        training_store.finish_run(session=session, run_id=run_id, status=training_store.SUCCEEDED)
    with heartbeat(config, run_id, f"run {run_id}", every=0.05):
        time.sleep(0.3)
    with session_scope(database_url) as session:  # the run (whatever its status) and its lock
        assert utcnow() - session.get_one(Run, run_id).heartbeat_at < timedelta(seconds=5)
        assert utcnow() - session.scalar(select(TrainingLock)).heartbeat_at < timedelta(seconds=5)


@pytest.mark.slow
class TestWithPrefect:
    @pytest.fixture(scope="class", autouse=True)
    def prefect_api(self):
        with prefect_test_harness(server_startup_timeout=120):
            yield str(get_current_settings().api.url)

    def start_foldwise_run(self, tmp_path, url, prefect_api, *extra):
        overrides = [
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path}",
            f"database_url={url}",
            *TINY,
        ]
        command = [sys.executable, "-m", "foldwise", "run", "--config", str(CONFIGS / "demo.toml")]
        command += [part for override in [*overrides, *extra] for part in ("--set", override)]
        env = os.environ | {"PREFECT_API_URL": prefect_api}
        ensure_schema(url)  # so that the test can watch the DB from the start
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_for(self, url, query, process, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()
            with session_scope(url) as session:
                if session.scalar(query) is not None:
                    return
            time.sleep(0.2)
        raise AssertionError("timed out")

    def test_a_killed_run_is_marked_crashed_and_the_next_run_trains(self, tmp_path, prefect_api):
        url = f"sqlite:///{tmp_path / 'f.db'}"
        deliver_drop(tmp_path / "source", n_images=32)
        # Many epochs after the first: the kill lands mid-training.
        long_stage = "train.stages=[{size=16, epochs=1, lr=1e-2}, {size=32, epochs=8, lr=1e-3}]"
        process = self.start_foldwise_run(tmp_path, url, prefect_api, long_stage)
        self.wait_for(url, select(Epoch.id), process)
        process.kill()
        process.wait()
        summary = retrain(config_for(tmp_path, url))
        assert summary.status == "succeeded"
        with session_scope(url) as session:
            first = session.scalar(select(Run).order_by(Run.id))
            assert first.status == "crashed" and f"process {process.pid}" in first.reason

    def test_foldwise_run_is_skipped_while_another_run_trains(self, tmp_path, prefect_api):
        url = f"sqlite:///{tmp_path / 'f.db'}"
        deliver_drop(tmp_path / "source", n_images=32)
        config = config_for(tmp_path, url)
        holder = start_run(config)  # a run of this process holds the lock, as a training run does
        assert claim_training(config, holder).train
        process = self.start_foldwise_run(tmp_path, url, prefect_api, "service.when_busy=skip")
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        assert f"run 2: skipped (run {holder} is training (since" in output
        end_run(config, holder, None)
        with session_scope(url) as session:
            training_store.finish_run(session=session, run_id=holder, status=training_store.SUCCEEDED)
            assert [r.status for r in session.scalars(select(Run).order_by(Run.id))] == [
                "succeeded",
                "skipped",
            ]

    def test_transient_pull_errors_are_retried_and_data_errors_are_not(self, tmp_path, monkeypatch):
        url = f"sqlite:///{tmp_path / 'f.db'}"
        deliver_drop(tmp_path / "source", n_images=32)
        config = config_for(tmp_path, url, "source.retries=2", "source.retry_delay_seconds=0")
        real_read_source, calls = ingest_module.read_source, []

        def flaky_read_source(settings, known_labels=()):
            calls.append(1)
            if len(calls) == 1:
                raise ConnectionResetError("connection reset by peer")
            return real_read_source(settings, known_labels)

        monkeypatch.setattr(ingest_module, "read_source", flaky_read_source)
        assert retrain(config).status == "succeeded" and len(calls) == 2

        def broken_read_source(settings, known_labels=()):
            calls.append(1)
            raise IngestError("labels.csv: no column 'tags'")

        calls.clear()
        monkeypatch.setattr(ingest_module, "read_source", broken_read_source)
        with pytest.raises(IngestError):
            retrain(config, force=True)
        assert len(calls) == 1
        with session_scope(url) as session:
            last = session.scalar(select(Run).order_by(Run.id.desc()))
            assert last.status == "failed" and "no column 'tags'" in last.reason
