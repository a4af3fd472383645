"""What folds on a Ray cluster need (`service.executor = "ray"`), as plain functions: the cluster's
options, each fold's reservation of CPUs and GPUs (`[ray]`), the check that a node sees the run's data
home, and the cancellation of folds the run no longer waits for. `flows/train_folds.py` wires them to
prefect-ray's RayTaskRunner. Ray is imported only by these functions: it is an optional dependency.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from foldwise.config import ConfigError, FoldwiseConfig
from foldwise.db import folds as fold_store
from foldwise.db.session import session_scope
from foldwise.errors import FoldwiseError
from foldwise.tasks import fold_records, train
from foldwise.tasks.ensemble import run_folder
from foldwise.tasks.fold_records import FoldOutput
from foldwise.tasks.logs import get_logger

CANCEL_GRACE_SECONDS = 30.0  # a cancelled fold ends by itself (recorded as crashed) or its worker is killed


class DataHomeNotShared(FoldwiseError, RuntimeError):
    """A Ray node does not see the run's data home, where folds read the image cache and write files."""


class FoldLost(FoldwiseError, RuntimeError):
    """The Ray cluster lost a fold: its worker or node died, or memory ran out."""


def require_ray() -> None:
    """A ConfigError that says how to install Ray and prefect-ray, where they are not; Ray then sends no
    usage reports (as for Prefect)."""
    try:
        import prefect_ray  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("service.executor = 'ray' needs Ray: pip install 'foldwise[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


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


def prepare_run(config: FoldwiseConfig, run_id: int, fold_set_id: int) -> None:
    """Before the folds are submitted: create the run folder (what `train_fold_on_node` looks for), and
    decode what the folds would find missing from the image cache (normally nothing: the pull filled it),
    so that folds training at once only read it: its stores have one writer at a time."""
    run_folder(config, run_id, create=True)
    with session_scope(config.resolved_database_url()) as session:
        fold_set = fold_store.load_fold_set(session=session, fold_set_id=fold_set_id)
    fold_records.load_fold_images(config, fold_set)


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


def ended(refs: list) -> list:
    """Those of the Ray object refs whose tasks have ended; it does not wait."""
    import ray

    return ray.wait(refs, num_returns=len(refs), timeout=0)[0] if refs else []


def fold_lost(fold: int, error: Exception) -> FoldLost:
    """Ray's failure (the fold's worker or node gone, memory out) as one clear error."""
    what = (str(error).strip().splitlines() or [""])[0]
    return FoldLost(
        f"fold {fold} was lost on the Ray cluster ({type(error).__name__}: {what}); the next run trains it again"
    )


def cancel(refs: list) -> None:
    """Cancel folds still queued or training and wait until they have ended: first as an interrupt (the
    fold frees its GPU memory and Prefect records it crashed), then by killing its worker."""
    import ray

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
