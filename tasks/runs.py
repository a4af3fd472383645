"""The life of a run record: started, waiting, skipped, failed, crashed or succeeded, with what made it.

One run trains at a time per database: a run claims the training lock (a row in the DB) before it
pulls data, so the rule holds for Prefect deployments and `foldwise run` alike. A running run's
process beats a heartbeat; a run whose process is gone is marked crashed by the next run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from db import training as training_store
from db.models import Run, utcnow
from db.session import ensure_schema, session_scope
from foldwise.config import FoldwiseConfig
from tasks.ingest import PullSummary
from tasks.logs import get_logger

HEARTBEAT_SECONDS = 30.0
CLAIM_POLL_SECONDS = 5.0

RECORDED_PACKAGES = [
    "foldwise",
    "torch",
    "torchvision",
    "fastai",
    "prefect",
    "scikit-learn",
    "iterative-stratification",
    "numpy",
    "pandas",
    "pillow",
]


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    status: str
    reason: str
    fbeta_oof: float | None = None
    fbeta_holdout: float | None = None
    seconds: float | None = None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def run_is_alive(run: Run, stale_after: timedelta) -> bool:
    """Alive: a fresh heartbeat and, on this host, its process still exists."""
    fresh = utcnow() - (run.heartbeat_at or run.started_at) < stale_after
    if run.host == platform.node() and run.pid is not None:
        return fresh and process_alive(run.pid)
    return fresh


def mark_crashed_runs(config: FoldwiseConfig) -> list[int]:
    """Runs left `running` by a process that is gone become `crashed`, and their lock is released."""
    stale_after = timedelta(minutes=config.service.stale_after_minutes)
    crashed = []
    with session_scope(config.resolved_database_url()) as session:
        for run in training_store.running_runs(session=session):
            if run_is_alive(run, stale_after):
                continue
            last_seen = (run.heartbeat_at or run.started_at).isoformat(timespec="seconds")
            training_store.finish_run(
                session=session,
                run_id=run.id,
                status=training_store.CRASHED,
                reason=f"process {run.pid} on {run.host} stopped without finishing (last heartbeat {last_seen} UTC)",
            )
            crashed.append(run.id)
    for run_id in crashed:
        get_logger(__name__).warning(
            "run %d was left running by a process that is gone: marked crashed", run_id
        )
    return crashed


def start_run(config: FoldwiseConfig, flow_run_id: str | None = None) -> int:
    url = config.resolved_database_url()
    ensure_schema(url)
    mark_crashed_runs(config)
    with session_scope(url) as session:
        return training_store.create_run(
            session=session,
            config=config.model_dump(mode="json"),
            seed=config.folds.seed,
            package_versions=package_versions(),
            git_commit=git_commit(),
            host=platform.node(),
            pid=os.getpid(),
            flow_run_id=flow_run_id,
        )


@contextmanager
def heartbeat(config: FoldwiseConfig, run_id: int, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Beat the run's heartbeat from a background thread while the block runs."""
    url = config.resolved_database_url()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with session_scope(url) as session:
                    training_store.beat(session=session, run_id=run_id)
            except Exception as error:  # a missed beat is not fatal; a stale run is judged by minutes
                get_logger(__name__).warning("heartbeat of run %d failed: %s", run_id, error)

    thread = threading.Thread(target=beat, name=f"foldwise-heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def claim_training(config: FoldwiseConfig, run_id: int, poll_seconds: float = CLAIM_POLL_SECONDS) -> Decision:
    """Take the training lock, waiting for the holder or giving up at once, per `service.when_busy`."""
    url = config.resolved_database_url()
    log = get_logger(__name__)
    deadline = time.monotonic() + config.service.wait_timeout_minutes * 60
    waiting_for = None
    while True:
        with session_scope(url) as session:
            if training_store.try_claim_training(session=session, run_id=run_id):
                return Decision(
                    True, "claimed" if waiting_for is None else f"claimed after run {waiting_for}"
                )
            holder = training_store.training_lock_holder(session=session)
            holder_id, since = (holder.id, holder.claimed_at) if holder else (None, None)
            if holder is not None and holder.status != training_store.RUNNING:
                # Its process died between recording its results and the champion gate.
                training_store.release_training_lock(session=session, run_id=holder.id)
                holder_id = None
        if holder_id is None:  # released between the claim and the look, or left by an ended run
            continue
        if mark_crashed_runs(config):
            continue
        busy = f"run {holder_id} is training (since {since:%Y-%m-%d %H:%M:%S} UTC)"
        if config.service.when_busy == "skip":
            return Decision(False, busy)
        if time.monotonic() > deadline:
            minutes = config.service.wait_timeout_minutes
            return Decision(False, f"{busy}; gave up waiting after {minutes:g} minutes")
        if waiting_for != holder_id:
            log.info("%s: waiting for it to finish (service.when_busy = 'wait')", busy)
            waiting_for = holder_id
        time.sleep(poll_seconds)


def decide(config: FoldwiseConfig, pull: PullSummary, force: bool) -> Decision:
    """Train unless nothing changed since the last successful run (and a model exists)."""
    with session_scope(config.resolved_database_url()) as session:
        last = training_store.last_succeeded_run(session=session)
        last_id, last_version = (last.id, last.dataset_version) if last else (None, None)
    if force:
        return Decision(True, "forced")
    if last_id is None:
        return Decision(True, "no model yet")
    if last_version == pull.dataset_version:
        return Decision(False, f"no new data since run {last_id} (data set version {last_version})")
    return Decision(True, f"data changed since run {last_id}: {pull.n_added} added, {pull.n_updated} updated")


def skip_run(config: FoldwiseConfig, run_id: int, pull: PullSummary | None, reason: str) -> RunSummary:
    data = (
        {"pull_id": pull.pull_id, "dataset_version": pull.dataset_version, "dataset_size": pull.dataset_size}
        if pull
        else {}
    )
    with session_scope(config.resolved_database_url()) as session:
        training_store.finish_run(
            session=session, run_id=run_id, status=training_store.SKIPPED, reason=reason, **data
        )
    get_logger(__name__).info("run %d skipped: %s", run_id, reason)
    return RunSummary(run_id, training_store.SKIPPED, reason)


def fail_run(config: FoldwiseConfig, run_id: int, error: BaseException) -> None:
    """An exception from our code or data fails the run; an interrupt or termination crashes it."""
    status = training_store.FAILED if isinstance(error, Exception) else training_store.CRASHED
    with session_scope(config.resolved_database_url()) as session:
        training_store.finish_run(
            session=session, run_id=run_id, status=status, reason=f"{type(error).__name__}: {error}"
        )
