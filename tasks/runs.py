"""The life of a run record: started, skipped, failed or succeeded, with what made it."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from db import training as training_store
from db.session import ensure_schema, session_scope
from foldwise.config import FoldwiseConfig
from tasks.ingest import PullSummary

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


def start_run(config: FoldwiseConfig, flow_run_id: str | None = None) -> int:
    url = config.resolved_database_url()
    ensure_schema(url)
    with session_scope(url) as session:
        return training_store.create_run(
            session=session,
            config=config.model_dump(mode="json"),
            seed=config.folds.seed,
            package_versions=package_versions(),
            git_commit=git_commit(),
            host=platform.node(),
            flow_run_id=flow_run_id,
        )


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


def skip_run(config: FoldwiseConfig, run_id: int, pull: PullSummary, reason: str) -> None:
    with session_scope(config.resolved_database_url()) as session:
        training_store.finish_run(
            session=session,
            run_id=run_id,
            status=training_store.SKIPPED,
            reason=reason,
            pull_id=pull.pull_id,
            dataset_version=pull.dataset_version,
            dataset_size=pull.dataset_size,
        )


def fail_run(config: FoldwiseConfig, run_id: int, error: BaseException) -> None:
    with session_scope(config.resolved_database_url()) as session:
        training_store.finish_run(
            session=session,
            run_id=run_id,
            status=training_store.FAILED,
            reason=f"{type(error).__name__}: {error}",
        )
