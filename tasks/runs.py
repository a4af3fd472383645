"""The life of a run record: started, waiting, skipped, failed, crashed or succeeded, with what made it.

One holder at a time trains, changes the data or changes the champion, per database: it claims the
training lock (a row in the DB) and holds it to its very last write, whatever becomes of it, so the
rule holds for Prefect deployments, `foldwise run`, `foldwise ingest` and promotions by hand alike.
The holder's process beats a heartbeat; a lock whose holder is gone (its very process ended, on this
host, or its heartbeat is older than `service.stale_after_minutes` by the database's clock: see
tasks/liveness.py) is taken over, and a run left `running` by a dead process is marked crashed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from prefect.utilities.timeout import timeout
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from foldwise import secrets
from foldwise.config import FoldwiseConfig
from foldwise.db import samples as sample_store
from foldwise.db import training as training_store
from foldwise.db.models import TrainingLock
from foldwise.db.session import ensure_schema, session_scope
from foldwise.errors import FoldwiseError
from foldwise.tasks import liveness
from foldwise.tasks.ingest import PullSummary
from foldwise.tasks.logs import get_logger

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


class Busy(FoldwiseError):
    """Another holder has the training lock and `service.when_busy` says not to wait."""


class TimedOut(FoldwiseError, TimeoutError):
    """A run or a fold took longer than its configured limit."""


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    status: str
    reason: str
    score_oof: float | None = None  # the configured metric, cross-fitted out of fold
    score_gate_set: float | None = None
    metric: str | None = None  # its name, e.g. "F2 (samples)"
    seconds: float | None = None
    gate: str | None = None  # the champion gate's decision, e.g. "promoted: the first model"


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


def stale_after(config: FoldwiseConfig) -> timedelta:
    return timedelta(minutes=config.service.stale_after_minutes)


def describe_error(error: BaseException) -> str:
    """The line a person reads: the message alone for errors they can act on, else the type too;
    credentials masked."""
    text = str(error) if isinstance(error, FoldwiseError) else f"{type(error).__name__}: {error}"
    return secrets.mask(text)


def mark_crashed_runs(config: FoldwiseConfig) -> list[int]:
    """Runs left `running` by a process that is gone become `crashed`: at once on this host, after
    `service.stale_after_minutes` of silence from another. A heartbeat from the future (clock skew) is
    reported and counts from now."""
    url = config.resolved_database_url()
    crashed = []
    with session_scope(url) as session:
        now = training_store.database_now(session=session)
        for run in training_store.running_runs(session=session):
            last_beat = run.heartbeat_at or run.started_at
            ahead = liveness.clock_skew(last_beat, now)
            if ahead:
                get_logger(__name__).warning(
                    liveness.skew_message(f"the heartbeat of run {run.id}", run.host, last_beat, ahead, url)
                )
                training_store.beat(session=session, run_id=run.id, holder=None)
                last_beat = now
            if liveness.is_alive(run.host, run.pid, run.process_start, last_beat, now, stale_after(config)):
                continue
            last_seen = last_beat.isoformat(timespec="seconds")
            training_store.fail_running_run(
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
    """Records a new run (its config, seed, package versions, commit, host and process) and returns its
    id; creates or upgrades the schema first and marks runs whose process died as crashed."""
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
            process_start=liveness.process_start(os.getpid()),
            flow_run_id=flow_run_id,
        )


def run_holder(run_id: int) -> str:
    """How a run is named as the holder of the training lock."""
    return f"run {run_id}"


@contextmanager
def heartbeat(
    config: FoldwiseConfig, run_id: int | None, holder: str, every: float = HEARTBEAT_SECONDS
) -> Iterator[None]:
    """Beat the run's and the lock's heartbeat from a background thread while the block runs."""
    url = config.resolved_database_url()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with session_scope(url) as session:
                    training_store.beat(session=session, run_id=run_id, holder=holder)
            except Exception as error:  # a missed beat is not fatal; a stale holder is judged by minutes
                get_logger(__name__).warning("heartbeat of %s failed: %s", holder, error)

    thread = threading.Thread(target=beat, name=f"foldwise-heartbeat-{holder}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def try_claim(config: FoldwiseConfig, run_id: int | None, holder: str) -> bool:
    try:
        with session_scope(config.resolved_database_url()) as session:
            training_store.insert_training_lock(
                session=session,
                run_id=run_id,
                holder=holder,
                host=platform.node(),
                pid=os.getpid(),
                process_start=liveness.process_start(os.getpid()),
            )
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class Holding:
    holder: str
    reason: str  # why another cannot train now, e.g. "run 12 is training (since ...)"


def busy_reason(lock: TrainingLock, ahead: timedelta | None) -> str:
    since = f"since {lock.acquired_at:%Y-%m-%d %H:%M:%S} UTC"
    if ahead:
        since += f", {liveness.span(ahead)} ahead of the database server's clock: clock skew on {lock.host}?"
    if lock.run_id is not None:
        return f"run {lock.run_id} is training ({since})"
    return f"{lock.holder} holds the training lock ({since})"


def lock_holding(config: FoldwiseConfig) -> Holding | None:
    """Who holds the training lock and lives; None when nobody does any more: it was released, or
    its holder was gone and the lock is taken over (its run marked crashed)."""
    url = config.resolved_database_url()
    log = get_logger(__name__)
    with session_scope(url) as session:
        lock = training_store.training_lock(session=session)
        if lock is None:
            return None
        now = training_store.database_now(session=session)
        seen, heartbeat_at = lock.heartbeat_at, lock.heartbeat_at
        ahead = liveness.clock_skew(seen, now)
        if ahead:
            log.warning(liveness.skew_message(f"the heartbeat of {lock.holder}", lock.host, seen, ahead, url))
            training_store.beat(session=session, run_id=None, holder=lock.holder)
            heartbeat_at = now
        if liveness.is_alive(lock.host, lock.pid, lock.process_start, heartbeat_at, now, stale_after(config)):
            return Holding(
                lock.holder, busy_reason(lock, liveness.clock_skew(max(lock.acquired_at, seen), now))
            )
        if training_store.take_over_training_lock(session=session, holder=lock.holder, heartbeat_at=seen):
            log.warning(
                "took over the training lock of %s: its process %d on %s has ended, or was silent since %s UTC",
                lock.holder,
                lock.pid,
                lock.host,
                seen.isoformat(timespec="seconds"),
            )
    mark_crashed_runs(config)
    return None


def claim(
    config: FoldwiseConfig, run_id: int | None, holder: str, poll_seconds: float = CLAIM_POLL_SECONDS
) -> Decision:
    """Take the training lock, waiting for the holder or giving up at once, per `service.when_busy`."""
    log = get_logger(__name__)
    deadline = time.monotonic() + config.service.wait_timeout_minutes * 60
    waiting_for = None
    while True:
        if try_claim(config, run_id, holder):
            return Decision(True, "claimed" if waiting_for is None else f"claimed after {waiting_for}")
        holding = lock_holding(config)
        if holding is None:
            continue
        if config.service.when_busy == "skip":
            return Decision(False, holding.reason)
        if time.monotonic() > deadline:
            minutes = config.service.wait_timeout_minutes
            return Decision(False, f"{holding.reason}; gave up waiting after {minutes:g} minutes")
        if waiting_for != holding.holder:
            log.info("%s: waiting for it to finish (service.when_busy = 'wait')", holding.reason)
            waiting_for = holding.holder
        time.sleep(poll_seconds)


def claim_training(config: FoldwiseConfig, run_id: int, poll_seconds: float = CLAIM_POLL_SECONDS) -> Decision:
    """Takes the training lock for the run, or says why it cannot (busy, by `service.when_busy`)."""
    return claim(config, run_id, run_holder(run_id), poll_seconds)


@contextmanager
def training_lock(config: FoldwiseConfig, what: str) -> Iterator[None]:
    """Hold the training lock for work outside a run (`foldwise ingest`, promotions by hand)."""
    holder = f"{what} (pid {os.getpid()} on {platform.node()})"
    ensure_schema(config.resolved_database_url())  # the first command on a new database may be this one
    decision = claim(config, None, holder)
    if not decision.train:
        raise Busy(f"{decision.reason}: try again when it has finished")
    try:
        with heartbeat(config, None, holder):
            yield
    finally:
        with session_scope(config.resolved_database_url()) as session:
            training_store.release_training_lock(session=session, holder=holder)


@contextmanager
def time_limit(minutes: float | None, what: str, setting: str) -> Iterator[None]:
    """Raise TimedOut in this thread when the block lasts longer than `minutes` (None: no limit)."""
    try:
        with timeout(seconds=minutes * 60 if minutes else None):
            yield
    except TimeoutError as error:
        if isinstance(error, TimedOut):
            raise
        raise TimedOut(f"{what} timed out after {minutes:g} minutes ({setting})") from None


def record_phase(config: FoldwiseConfig, run_id: int, phase: str, seconds: float) -> None:
    """Add to the wall time the run spent in a phase (best effort: a timing is not worth a run)."""
    try:
        with session_scope(config.resolved_database_url()) as session:
            training_store.add_phase_seconds(session=session, run_id=run_id, phase=phase, seconds=seconds)
    except SQLAlchemyError as error:
        get_logger(__name__).warning("time of phase %r not recorded: %s", phase, error)


@contextmanager
def phase(config: FoldwiseConfig, run_id: int, name: str) -> Iterator[None]:
    """Record the wall time of the block as the run's phase `name`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        record_phase(config, run_id, name, time.perf_counter() - started)


def decide(config: FoldwiseConfig, pull: PullSummary, force: bool) -> Decision:
    """Train unless nothing changed since the last successful run (and a model exists). The reason
    counts every pull since that run's, those of `foldwise ingest` too, not only this run's."""
    with session_scope(config.resolved_database_url()) as session:
        last = training_store.last_succeeded_run(session=session)
        last_id, last_version = (last.id, last.dataset_version) if last else (None, None)
        n_pulls, changes = sample_store.changes_between(
            session=session, after_pull_id=(last.pull_id or 0) if last else 0, up_to_pull_id=pull.pull_id
        )
    if force:
        return Decision(True, "forced")
    if last_id is None:
        return Decision(True, "no model yet")
    if last_version == pull.dataset_version:
        return Decision(False, f"no new data since run {last_id} (data set version {last_version})")
    in_pulls = f" (in {n_pulls} pulls)" if n_pulls > 1 else ""
    return Decision(
        True, f"data changed since run {last_id}: {replace(pull, **changes).change_summary()}{in_pulls}"
    )


def skip_run(config: FoldwiseConfig, run_id: int, pull: PullSummary | None, reason: str) -> RunSummary:
    """Records the run as skipped, with the reason and the pull it looked at (if any)."""
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


def end_run(config: FoldwiseConfig, run_id: int, error: BaseException | None) -> None:
    """The run's last write: how it failed, if it did, and the release of the training lock.

    An exception fails the run, an interrupt or termination crashes it; a run that already recorded
    its results stays succeeded (what failed after, the gate say, is recorded where it happened)."""
    with session_scope(config.resolved_database_url()) as session:
        if error is not None:
            status = training_store.FAILED if isinstance(error, Exception) else training_store.CRASHED
            training_store.fail_running_run(
                session=session, run_id=run_id, status=status, reason=describe_error(error)
            )
        training_store.release_training_lock(session=session, holder=run_holder(run_id))
