"""Where a run's folds train (`service.executor`): one after another in the run's process ("local"), or
at the same time on a Ray cluster ("ray"), each fold a Prefect task on prefect-ray's RayTaskRunner that
reserves `ray.num_cpus` and `ray.num_gpus`.

Either way a fold is `train.train_fold`: it reuses a fold that an unfinished run trained on the same
inputs, writes its files whole and then its row, and frees its GPU memory when it ends. The run's own
process holds the training lock and beats its heartbeat meanwhile. When it stops waiting for the folds
(one failed or timed out, the run timed out or was interrupted), the folds still queued or training are
cancelled and have ended before it goes on: no fold trains after the run has released the lock.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from foldwise.db import folds as fold_store
from foldwise.db.session import session_scope
from foldwise.tasks import fold_records, train
from foldwise.tasks.ensemble import run_folder
from foldwise.tasks.fold_records import FoldOutput
from foldwise.tasks.logs import get_logger
from foldwise.tasks.runs import TimedOut
from prefect import Task

from foldwise.config import ConfigError, FoldwiseConfig
from foldwise.errors import FoldwiseError

POLL_SECONDS = 1.0  # how often the run's thread looks at its folds
CANCEL_GRACE_SECONDS = 30.0  # a cancelled fold ends by itself (recorded as crashed) or its worker is killed


class DataHomeNotShared(FoldwiseError, RuntimeError):
    """A Ray node does not see the run's data home, where folds read the image cache and write files."""


class FoldLost(FoldwiseError, RuntimeError):
    """The Ray cluster lost a fold: its worker or node died, or memory ran out."""


def fold_arguments(
    config: FoldwiseConfig, run_id: int, fold_set_id: int, warm_from: int | None
) -> list[dict[str, Any]]:
    return [
        {"config": config, "run_id": run_id, "fold_set_id": fold_set_id, "fold": fold, "warm_from": warm_from}
        for fold in range(config.folds.n_folds)
    ]


def with_fold_timeout(config: FoldwiseConfig, fold_task: Task) -> Task:
    minutes = config.train.fold_timeout_minutes
    return fold_task.with_options(timeout_seconds=minutes * 60 if minutes else None)


def fold_output(config: FoldwiseConfig, fold: int, result) -> FoldOutput:
    """The fold's output, `result()`'s; its timeout as the run's error."""
    try:
        return result()
    except TimeoutError:
        minutes = config.train.fold_timeout_minutes
        raise TimedOut(
            f"fold {fold} timed out after {minutes:g} minutes (train.fold_timeout_minutes)"
        ) from None


def train_folds_here(
    config: FoldwiseConfig, fold_task: Task, run_id: int, fold_set_id: int, warm_from: int | None
) -> list[FoldOutput]:
    """`service.executor = "local"`: each fold in this process, one after another."""
    fold_task = with_fold_timeout(config, fold_task)
    return [
        fold_output(config, arguments["fold"], lambda arguments=arguments: fold_task(**arguments))
        for arguments in fold_arguments(config, run_id, fold_set_id, warm_from)
    ]


def train_fold_on_node(
    config: FoldwiseConfig, run_id: int, fold_set_id: int, fold: int, warm_from: int | None
) -> FoldOutput:
    """`train.train_fold` on a Ray node, which must see the data home the run sees: the run created its
    run folder there before it submitted the folds."""
    folder = run_folder(config, run_id)
    if not folder.is_dir():
        raise DataHomeNotShared(
            f"fold {fold} on {platform.node()}: {folder} does not exist there; every Ray node needs the data "
            f"home ({config.data_home}) at the same path, on a shared file system"
        )
    return train.train_fold(config, run_id, fold_set_id, fold, warm_from)


def fill_image_cache(config: FoldwiseConfig, fold_set_id: int) -> None:
    """Decode here what the folds would find missing from the image cache (normally nothing: the pull
    filled it), so that folds training at once only read it: its stores have one writer at a time."""
    with session_scope(config.resolved_database_url()) as session:
        fold_set = fold_store.load_fold_set(session=session, fold_set_id=fold_set_id)
    fold_records.load_fold_images(config, fold_set)


def cluster_options(config: FoldwiseConfig) -> dict[str, Any]:
    """ray.init's options: its workers mask credentials in their logs as the run's process does."""
    options: dict[str, Any] = {
        "runtime_env": {"worker_process_setup_hook": "foldwise.secrets.install_log_masking"}
    }
    if config.ray.address is None:
        # A cluster of the run's own, even where another one runs on this machine (ray.init() alone
        # would join that one); it lives only as long as the folds, so without a dashboard.
        options |= {"address": "local", "include_dashboard": False}
    return options


def fold_resources(config: FoldwiseConfig, cluster: dict[str, float]) -> dict[str, float]:
    """What each fold reserves. A local cluster that could never hold one fold is a config error; a
    cluster that was joined may grow (Ray's autoscaler), so its folds wait, said in the log."""
    gpus = config.ray.num_gpus
    if gpus is None:
        gpus = 1.0 if cluster.get("GPU", 0) > 0 and config.train.device != "cpu" else 0.0
    wanted = {"CPU": (config.ray.num_cpus, "ray.num_cpus"), "GPU": (gpus, "ray.num_gpus")}
    for name, (amount, setting) in wanted.items():
        has = cluster.get(name, 0.0)
        if amount <= has:
            continue
        problem = f"each fold reserves {amount:g} {name} ({setting}) but the Ray cluster has {has:g}"
        if config.ray.address is None:
            raise ConfigError(f"{problem}: lower {setting}")
        get_logger(__name__).warning("%s: the folds wait until it has", problem)
    return {"num_cpus": config.ray.num_cpus, "num_gpus": gpus}


def train_folds_on_ray(
    config: FoldwiseConfig, fold_task: Task, run_id: int, fold_set_id: int, warm_from: int | None
) -> list[FoldOutput]:
    """`service.executor = "ray"`: every fold submitted at once to the cluster at `ray.address`, or to
    a local one started for the run; Ray runs as many at a time as their resources allow."""
    try:
        import ray
        from prefect_ray import RayTaskRunner
        from prefect_ray.context import remote_options
    except ImportError:
        raise ConfigError("service.executor = 'ray' needs Ray: pip install 'foldwise[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports, as for Prefect
    fold_task = with_fold_timeout(config, fold_task)
    run_folder(config, run_id, create=True)  # what train_fold_on_node looks for
    fill_image_cache(config, fold_set_id)
    log = get_logger(__name__)
    with RayTaskRunner(address=config.ray.address, init_kwargs=cluster_options(config)) as runner:
        cluster = ray.cluster_resources()
        resources = fold_resources(config, cluster)
        log.info(
            "%d folds on the Ray cluster (%g CPUs, %g GPUs), each reserving %g CPUs and %g GPUs",
            config.folds.n_folds,
            cluster.get("CPU", 0),
            cluster.get("GPU", 0),
            resources["num_cpus"],
            resources["num_gpus"],
        )
        # No retries by Ray: a fold lost with its worker fails the run as a crash would, and the next
        # run reuses the folds that were recorded (a retry would run the same Prefect task run again).
        with remote_options(**resources, max_retries=0):
            pending = {
                arguments["fold"]: runner.submit(fold_task, parameters=arguments)
                for arguments in fold_arguments(config, run_id, fold_set_id, warm_from)
            }
        outputs = {}
        try:
            while pending:
                # Look without waiting, then sleep in Python: the run's time limit (a signal) must find
                # the thread here, since inside Ray's wait its exception becomes a SystemError.
                refs = [future.wrapped_future for future in pending.values()]
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for fold in [fold for fold, future in pending.items() if future.wrapped_future in ready]:
                    outputs[fold] = ray_fold_output(ray, config, fold, pending.pop(fold))
                if pending:
                    time.sleep(POLL_SECONDS)
        finally:
            cancel(ray, [future.wrapped_future for future in pending.values()])
    return [outputs[fold] for fold in sorted(outputs)]


def ray_fold_output(ray, config: FoldwiseConfig, fold: int, future) -> FoldOutput:
    """A fold's output from Ray: the fold's own errors as it raised them, Ray's failures (its worker or
    node gone, memory out) as one clear error."""
    try:
        return fold_output(config, fold, future.result)
    except ray.exceptions.RayError as error:
        what = (str(error).strip().splitlines() or [""])[0]
        raise FoldLost(
            f"fold {fold} was lost on the Ray cluster ({type(error).__name__}: {what}); the next run "
            "trains it again"
        ) from None


def cancel(ray, refs: list) -> None:
    """Cancel folds still queued or training and wait until they have ended: first as an interrupt (the
    fold frees its GPU memory and Prefect records it crashed), then by killing its worker."""
    if refs:
        _, refs = ray.wait(refs, num_returns=len(refs), timeout=0)  # those that have not ended
    if not refs:
        return
    get_logger(__name__).warning("cancelling %d folds: the run stopped waiting for them", len(refs))
    for ref in refs:
        ray.cancel(ref)
    _, running = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_SECONDS)
    for ref in running:
        ray.cancel(ref, force=True)
    if running:
        ray.wait(running, num_returns=len(running), timeout=CANCEL_GRACE_SECONDS)
