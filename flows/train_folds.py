"""The `train-folds` sub-flow: each fold of a run is a `train-fold` task, on the task runner that
`service.executor` names.

- "local": the flow's own runner; each fold task is called, so Prefect runs it right there in the run's
  process, one after another.
- "ray": prefect-ray's RayTaskRunner, on the cluster at `ray.address` or on a local one started for the
  sub-flow; every fold is submitted at once, reserving `ray.num_cpus` and `ray.num_gpus`, and Ray runs as
  many at a time as their resources allow.

Either way a fold is `train.train_fold`: it reuses a fold that an unfinished run trained on the same
inputs, writes its files whole and then its row, and frees its GPU memory when it ends; it may last
`train.fold_timeout_minutes`. The run's own process holds the training lock and beats its heartbeat
meanwhile. When it stops waiting for the folds (one failed or timed out, the run timed out or was
interrupted), the folds still queued or training are cancelled and have ended before the sub-flow ends:
no fold trains after the run has released the lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from prefect import Task, flow
from prefect.futures import PrefectWrappedFuture

from foldwise.config import FoldwiseConfig
from foldwise.flows import task
from foldwise.tasks import ray_folds, train
from foldwise.tasks.fold_records import FoldOutput
from foldwise.tasks.logs import get_logger
from foldwise.tasks.runs import TimedOut

POLL_SECONDS = 1.0  # how often the run's thread looks at the folds on Ray

train_fold = task(train.train_fold, name="train-fold", task_run_name="train-fold-{fold}")
train_fold_on_node = task(ray_folds.train_fold_on_node, name="train-fold", task_run_name="train-fold-{fold}")


def with_fold_timeout(config: FoldwiseConfig, fold_task: Task) -> Task:
    """The fold task, limited to `train.fold_timeout_minutes` (None: no limit)."""
    minutes = config.train.fold_timeout_minutes
    return fold_task.with_options(timeout_seconds=minutes * 60 if minutes else None)


def fold_output(config: FoldwiseConfig, fold: int, result: Callable[[], FoldOutput]) -> FoldOutput:
    """The fold's output, `result()`'s; its timeout as the run's error."""
    try:
        return result()
    except TimeoutError:
        minutes = config.train.fold_timeout_minutes
        raise TimedOut(
            f"fold {fold} timed out after {minutes:g} minutes (train.fold_timeout_minutes)"
        ) from None


@flow(name="train-folds", description="Train the run's folds (or reuse them), here or on Ray.")
def train_folds(
    config: FoldwiseConfig, run_id: int, fold_set_id: int, warm_from: int | None
) -> list[FoldOutput]:
    """Every fold of the run, in fold order."""
    if config.service.executor == "ray":
        return train_folds_on_ray(config, run_id, fold_set_id, warm_from)
    fold_task = with_fold_timeout(config, train_fold)
    return [
        fold_output(config, fold, partial(fold_task, config, run_id, fold_set_id, fold, warm_from))
        for fold in range(config.folds.n_folds)
    ]


def train_folds_on_ray(
    config: FoldwiseConfig, run_id: int, fold_set_id: int, warm_from: int | None
) -> list[FoldOutput]:
    """Inside `train-folds` on the RayTaskRunner: submit every fold, collect each as it ends, and cancel
    those still pending when the run stops waiting."""
    import ray
    from prefect_ray.context import remote_options

    cluster = ray.cluster_resources()
    resources = ray_folds.fold_resources(config, cluster)
    get_logger(__name__).info(
        "%d folds on the Ray cluster (%g CPUs, %g GPUs), each reserving %g CPUs and %g GPUs",
        config.folds.n_folds,
        cluster.get("CPU", 0),
        cluster.get("GPU", 0),
        resources["num_cpus"],
        resources["num_gpus"],
    )
    fold_task = with_fold_timeout(config, train_fold_on_node)
    # No retries by Ray: a fold lost with its worker fails the run as a crash would, and the next run
    # reuses the folds that were recorded (a retry would run the same Prefect task run again).
    with remote_options(**resources, max_retries=0):
        pending: dict[int, PrefectWrappedFuture] = {
            fold: fold_task.submit(config, run_id, fold_set_id, fold, warm_from)
            for fold in range(config.folds.n_folds)
        }
    outputs = {}
    try:
        while pending:
            # Look without waiting, then sleep in Python: the run's time limit (a signal) must find the
            # thread here, since inside Ray's wait its exception becomes a SystemError.
            ended = ray_folds.ended([future.wrapped_future for future in pending.values()])
            for fold in [fold for fold, future in pending.items() if future.wrapped_future in ended]:
                outputs[fold] = ray_fold_output(config, fold, pending.pop(fold))
            if pending:
                time.sleep(POLL_SECONDS)
    finally:
        ray_folds.cancel([future.wrapped_future for future in pending.values()])
    return [outputs[fold] for fold in sorted(outputs)]


def ray_fold_output(config: FoldwiseConfig, fold: int, future: PrefectWrappedFuture) -> FoldOutput:
    """A fold's output from Ray: the fold's own errors as it raised them, Ray's failures as FoldLost."""
    import ray

    try:
        return fold_output(config, fold, future.result)
    except ray.exceptions.RayError as error:
        raise ray_folds.fold_lost(fold, error) from None


def fan_out_folds(
    config: FoldwiseConfig, run_id: int, fold_set_id: int, warm_from: int | None
) -> list[FoldOutput]:
    """`train-folds` on the task runner `service.executor` names."""
    if config.service.executor != "ray":
        return train_folds(config, run_id, fold_set_id, warm_from)
    ray_folds.require_ray()
    from prefect_ray import RayTaskRunner

    ray_folds.prepare_run(config, run_id, fold_set_id)
    runner = RayTaskRunner(address=config.ray.address, init_kwargs=ray_folds.cluster_options(config))
    return train_folds.with_options(task_runner=runner)(config, run_id, fold_set_id, warm_from)
