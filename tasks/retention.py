"""Retention: which runs keep their files, what the data home holds, and the space the rest gives back.

A run's files (`data_home/runs/<id>`: fold weights, their out-of-fold predictions, model.json) stay
while something may use them:
- the champion, and the run `foldwise rollback` would make champion again;
- the newest `retention.keep_last` successful runs;
- pinned runs (`foldwise pin`);
- a successful run not gated yet (the next run gates it) and a running one;
- a failed or crashed run newer than the last successful one (a retry reuses its folds).
Every other run loses its files and its fold rows. Its record stays (metrics, learning curves,
predictions, gate decisions), with a note saying when its files went. The image cache loses the
stores of item sizes that neither the config nor a kept model needs (after a change of
`train.stages`); the items of images no active sample uses are reclaimed by every pull already
(`foldwise.tasks.cache.reclaim`), which is the only change to the data set.

A run is pruned in an order that a crash cannot make inconsistent: model.json first (the model can no
longer be loaded), then its fold rows with the note (one transaction), then its files (files no row
names are what `remove_unrecorded_files` removes anyway).
Pins live in `data_home/pins.json` (run id -> why) until the runs table has a column for them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from foldwise.config import FoldwiseConfig
from foldwise.db import registry
from foldwise.db import training as training_store
from foldwise.db.models import FoldResult, Run, utcnow
from foldwise.db.session import ensure_schema, session_scope
from foldwise.errors import FoldwiseError
from foldwise.files import atomic_file
from foldwise.tasks.cache import item_sizes
from foldwise.tasks.ensemble import MODEL_RECORD, ModelError, load_model, run_folder, runs_folder
from foldwise.tasks.logs import get_logger
from foldwise.tasks.predict import model_item_size
from foldwise.tasks.runs import training_lock
from foldwise.units import byte_size

KINDS = ("weights", "predictions", "run records", "image cache", "database", "source", "other")
FREED_KINDS = KINDS[:4]  # what retention removes
PINS_FILE = "pins.json"


class RetentionError(FoldwiseError, ValueError):
    """A pin that cannot be set or removed; the message says why."""


# Pins -------------------------------------------------------------------------------------------


def pins_path(config: FoldwiseConfig) -> Path:
    return config.data_home / PINS_FILE


def pinned_runs(config: FoldwiseConfig) -> dict[int, str]:
    """Run id -> why it is pinned."""
    try:
        return {int(run_id): why for run_id, why in json.loads(pins_path(config).read_text()).items()}
    except FileNotFoundError:
        return {}


def write_pins(config: FoldwiseConfig, pins: dict[int, str]) -> None:
    path = pins_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as partial:
        partial.write_text(json.dumps({str(run_id): why for run_id, why in sorted(pins.items())}, indent=2))


def pin(config: FoldwiseConfig, run_id: int, reason: str = "by hand") -> str:
    """Keep a run's files whatever retention says. Under the training lock, so that a gc in progress
    cannot remove the run being pinned."""
    with training_lock(config, "foldwise pin"):
        with session_scope(config.resolved_database_url()) as session:
            run = session.get(Run, run_id)
            status = None if run is None else run.status
        if status != training_store.SUCCEEDED:
            raise RetentionError(f"run {run_id} is not a successful run: only those have a model to keep")
        if not (run_folder(config, run_id) / MODEL_RECORD).is_file():
            raise RetentionError(f"run {run_id}'s files were already removed by gc: nothing left to pin")
        write_pins(config, pinned_runs(config) | {run_id: reason})
    return f"run {run_id} pinned: gc keeps its files until `foldwise unpin {run_id}`"


def unpin(config: FoldwiseConfig, run_id: int) -> str:
    with training_lock(config, "foldwise unpin"):  # as pin: one writer of the pins at a time
        pins = pinned_runs(config)
        if run_id not in pins:
            raise RetentionError(f"run {run_id} is not pinned (pinned: {sorted(pins) or 'none'})")
        del pins[run_id]
        write_pins(config, pins)
    return f"run {run_id} unpinned: retention decides on its files from the next gc"


# What the data home holds -----------------------------------------------------------------------


def database_file(config: FoldwiseConfig) -> Path | None:
    url = make_url(config.resolved_database_url())
    return Path(url.database).resolve() if url.drivername.startswith("sqlite") and url.database else None


def kind_of(path: Path, config: FoldwiseConfig, database: Path | None) -> str:
    """The kind of a file under the data home (or the source folder) for the storage report."""
    if path.is_relative_to(config.source.path):
        return "source"
    if database is not None and path.parent == database.parent and path.name.startswith(database.name):
        return "database"  # with its -wal and -shm files
    top = path.relative_to(config.data_home).parts[0]
    if top == "cache":
        return "image cache"
    if top == "runs":
        if path.suffix == ".safetensors":
            return "weights"
        return "predictions" if path.name.endswith("_predictions.npz") else "run records"
    return "other"


def files_under(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """Regular files (links to elsewhere are not this folder's bytes), with their status."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            status = path.lstat()
            if stat.S_ISREG(status.st_mode):
                found.append((path, status))
    return found


def storage_use(config: FoldwiseConfig) -> dict[str, int]:
    """Bytes by kind under the data home, and in the source folder if it lies outside; a file with
    several links (a fold reused from an earlier run) counts once."""
    database = database_file(config)
    folders = [config.data_home]
    if not config.source.path.is_relative_to(config.data_home):
        folders.append(config.source.path)
    use = dict.fromkeys(KINDS, 0)
    seen = set()
    for folder in folders:
        for path, status in files_under(folder):
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                use[kind_of(path, config, database)] += status.st_size
    return use


def record_storage(config: FoldwiseConfig, run_id: int) -> dict[str, int]:
    """The data home's use by kind, recorded with the run that just trained (the dashboard's storage
    chart: it reads the database only)."""
    use = storage_use(config)
    with session_scope(config.resolved_database_url()) as session:
        training_store.set_storage_bytes(session=session, run_id=run_id, use=use)
    return use


def storage_lines(config: FoldwiseConfig, use: dict[str, int]) -> list[str]:
    outside = "" if config.source.path.is_relative_to(config.data_home) else f" (at {config.source.path})"
    lines = [f"data home {config.data_home}: {byte_size(sum(use.values()))}"]
    for kind in KINDS:
        label = f"{kind}{outside}" if kind == "source" else kind
        lines.append(f"  {label:<24} {byte_size(use[kind]):>10}")
    return lines


# Retention --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFiles:
    run_id: int
    paths: list[Path]  # what its folder holds


@dataclass(frozen=True)
class Plan:
    kept: dict[int, list[str]]  # run id -> why it keeps its files
    pruned: list[RunFiles]
    stale_stores: list[Path]  # image cache stores of item sizes nobody needs


def runs_with_files(config: FoldwiseConfig) -> dict[int, str | None]:
    """Every run that has a folder or fold rows, with its status (None: no such run)."""
    folder = runs_folder(config)
    on_disk = set()
    if folder.is_dir():
        on_disk = {int(path.name) for path in folder.iterdir() if path.is_dir() and path.name.isdigit()}
    with session_scope(config.resolved_database_url()) as session:
        with_rows = set(session.scalars(select(FoldResult.run_id).distinct()))
        statuses = dict(session.execute(select(Run.id, Run.status)).tuples().all())
    return {run_id: statuses.get(run_id) for run_id in sorted(on_disk | with_rows)}


def keep_reasons(config: FoldwiseConfig, keep_last: int) -> dict[int, list[str]]:
    with session_scope(config.resolved_database_url()) as session:
        stack = registry.champion_stack(session=session)
        succeeded = list(
            session.scalars(
                select(Run.id).where(Run.status == training_store.SUCCEEDED).order_by(Run.id.desc())
            )
        )
        ungated = registry.ungated_runs(session=session)
        unfinished = session.scalars(
            select(Run.id).where(
                Run.status.in_(training_store.ENDED_UNFINISHED), Run.id > (succeeded[0] if succeeded else 0)
            )
        ).all()
    reasons: dict[int, list[str]] = {}

    def keep(run_id: int, why: str) -> None:
        reasons.setdefault(run_id, []).append(why)

    if stack:
        keep(stack[-1], "champion")
    if len(stack) > 1:
        keep(stack[-2], "a rollback returns to it")
    for run_id in succeeded[:keep_last]:
        keep(run_id, f"among the last {keep_last} successful")
    for run_id, why in pinned_runs(config).items():
        keep(run_id, f"pinned: {why}")
    for run_id in ungated:
        keep(run_id, "not gated yet")
    for run_id in unfinished:
        keep(run_id, "a retry may reuse its folds")
    return reasons


def needed_item_sizes(config: FoldwiseConfig, kept: list[int]) -> set[int]:
    """The config's item sizes and those of every kept model (the gate predicts with the champion)."""
    sizes = set(item_sizes(config))
    for run_id in kept:
        try:
            sizes.add(model_item_size(load_model(config, run_id)))
        except ModelError:  # a failed run, or one whose model.json is gone: no size to keep
            continue
    return sizes


def cache_stores(config: FoldwiseConfig) -> dict[int, Path]:
    """Item size -> the image cache's folder of that size."""
    cache = config.data_home / "cache"
    folders = cache.glob("*px") if cache.is_dir() else []
    return {
        int(folder.name.removesuffix("px")): folder
        for folder in folders
        if folder.is_dir() and folder.name.removesuffix("px").isdigit()
    }


def plan(config: FoldwiseConfig, keep_last: int) -> Plan:
    reasons = keep_reasons(config, keep_last)
    kept, pruned = {}, []
    for run_id, status in runs_with_files(config).items():
        if status is None or status == training_store.RUNNING:  # not ours to judge, or in use
            continue
        if run_id in reasons:
            kept[run_id] = reasons[run_id]
            continue
        folder = run_folder(config, run_id)
        paths = sorted(path for path in folder.iterdir() if path.is_file()) if folder.is_dir() else []
        pruned.append(RunFiles(run_id, paths))
    needed = needed_item_sizes(config, list(kept))
    stale = [store for size, store in cache_stores(config).items() if size not in needed]
    return Plan(kept, pruned, stale)


def freed_by_removing(paths: list[Path], config: FoldwiseConfig) -> dict[str, int]:
    """The bytes removing these files gives back, by kind: a file also linked elsewhere (a fold a
    later run reused) gives nothing."""
    statuses = {path: path.lstat() for path in paths if path.exists()}
    links = Counter((status.st_dev, status.st_ino) for status in statuses.values())
    database = database_file(config)
    freed, counted = dict.fromkeys(KINDS, 0), set()
    for path, status in statuses.items():
        key = (status.st_dev, status.st_ino)
        if key not in counted and links[key] >= status.st_nlink:
            freed[kind_of(path, config, database)] += status.st_size
            counted.add(key)
    return freed


@dataclass(frozen=True)
class GcReport:
    dry_run: bool
    kept: dict[int, list[str]]
    pruned: list[int]
    freed: dict[str, int]  # bytes by kind

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        kept = "; ".join(f"run {run_id} ({', '.join(why)})" for run_id, why in sorted(self.kept.items()))
        pruned = ", ".join(str(run_id) for run_id in self.pruned) or "none"
        total = sum(self.freed.values())
        detail = ", ".join(f"{kind} {byte_size(size)}" for kind, size in self.freed.items() if size)
        return [
            f"kept the files of {len(self.kept)} run(s): {kept or 'none'}",
            f"{verb} the files of run(s): {pruned}",
            f"{'would free' if self.dry_run else 'freed'} {byte_size(total)}"
            + (f" ({detail})" if detail else ""),
        ]


def prune_run(config: FoldwiseConfig, run: RunFiles, note: str) -> None:
    (run_folder(config, run.run_id) / MODEL_RECORD).unlink(missing_ok=True)
    with session_scope(config.resolved_database_url()) as session:
        rows = training_store.fold_results(session=session, run_id=run.run_id)
        training_store.delete_fold_results(session=session, rows=rows)
        training_store.add_note(session=session, run_id=run.run_id, note=note)
    for path in run.paths:
        path.unlink(missing_ok=True)
    folder = run_folder(config, run.run_id)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def collect_garbage(config: FoldwiseConfig, keep_last: int | None = None, dry_run: bool = False) -> GcReport:
    """Remove the files of runs nothing keeps and the image cache's stores nothing needs. The caller
    holds the training lock (a run at its end, or `foldwise gc`); a dry run only reads."""
    ensure_schema(config.resolved_database_url())
    keep_last = config.retention.keep_last if keep_last is None else keep_last
    chosen = plan(config, keep_last)
    removed = [path for run in chosen.pruned for path in run.paths]
    removed += [path for store in chosen.stale_stores for path, _ in files_under(store)]
    freed = {kind: size for kind, size in freed_by_removing(removed, config).items() if kind in FREED_KINDS}
    if not dry_run:
        note = f"files removed by retention on {utcnow():%Y-%m-%d %H:%M} UTC (keep_last {keep_last})"
        for run in chosen.pruned:
            prune_run(config, run, note)
        for store in chosen.stale_stores:
            shutil.rmtree(store)
    return GcReport(dry_run, chosen.kept, [run.run_id for run in chosen.pruned], freed)


def after_run(config: FoldwiseConfig) -> GcReport:
    """`retention.after_each_run`: at the end of a successful run, under its lock; said in its log."""
    report = collect_garbage(config)
    get_logger(__name__).info("retention: %s", "; ".join(report.lines()))
    return report


def collect_garbage_locked(
    config: FoldwiseConfig, keep_last: int | None = None, dry_run: bool = False
) -> GcReport:
    """`foldwise gc`: under the training lock, unless it only looks."""
    if dry_run:
        return collect_garbage(config, keep_last, dry_run=True)
    with training_lock(config, "foldwise gc"):
        return collect_garbage(config, keep_last)
