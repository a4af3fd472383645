"""The same retraining run with the local executor and on Ray, in one process, on the demo data.

The data are pulled (and decoded into the image cache) once, before the runs. Then the local executor
trains the folds one after another in this process, with torch's threads as they are (one per core)
and again with as many as Ray gives a fold (`ray.num_cpus`); then a local Ray cluster started by the
run trains them at once, `ray.num_cpus` each. Printed: each run's wall time (Ray's includes starting
its cluster and its workers' imports), the span from the first fold's start to the last fold's end,
its out-of-fold score, and the ratios Ray / local (below 1: Ray is faster). With the same threads,
the local run and Ray's train the same models: the largest difference of their out-of-fold
probabilities is printed too (0 in fp32; bf16 autocast on a CPU with bf16 instructions does
not always repeat itself, even within one process).

    python -m benchmarks.bench_executor [--images 600] [--folds 3] [--ray-cpus 1] [--stages ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import select

from foldwise.config import load_config
from foldwise.db.models import FoldResult, Prediction
from foldwise.db.session import session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.ingest import ingest

ROOT = Path(__file__).resolve().parents[1]


def fold_span(url: str, run_id: int) -> float:
    """Seconds from the first fold's start to the last fold's end."""
    with session_scope(url) as session:
        folds = list(session.scalars(select(FoldResult).where(FoldResult.run_id == run_id)))
    return (max(f.finished_at for f in folds) - min(f.started_at for f in folds)).total_seconds()


def oof(url: str, run_id: int) -> dict[int, np.ndarray]:
    with session_scope(url) as session:
        rows = session.scalars(select(Prediction).where(Prediction.run_id == run_id, Prediction.split == "oof"))
        return {row.sample_id: np.array(row.probabilities) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600, help="images in the demo drop")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--ray-cpus", type=float, default=1.0, help="ray.num_cpus: CPUs each fold reserves")
    parser.add_argument("--stages", default=None, help="train.stages as TOML (default: the demo config's)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    logging.getLogger("prefect").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=120):
        home = Path(folder)
        common = [
            f"source.path={home / 'source'}",
            f"data_home={home}",
            f"database_url=sqlite:///{home / 'f.db'}",
            f"folds.n_folds={args.folds}",
            *([f"train.stages={args.stages}"] if args.stages else []),
        ]
        local = load_config(ROOT / "configs" / "demo.toml", common)
        on_ray = load_config(
            ROOT / "configs" / "demo.toml", [*common, "service.executor=ray", f"ray.num_cpus={args.ray_cpus}"]
        )
        url = local.resolved_database_url()
        deliver_drop(local.source.path, n_images=args.images)
        ingest(local)  # both runs find the images decoded already
        threads, fold_threads = torch.get_num_threads(), max(1, int(args.ray_cpus))
        local_same = f"local, {fold_threads} thread{'s' if fold_threads > 1 else ''}"
        runs = {}
        for name, config, torch_threads in (
            (f"local, {threads} threads", local, threads),
            (local_same, local, fold_threads),
            ("ray", on_ray, threads),  # Ray sets each fold's threads
        ):
            torch.set_num_threads(torch_threads)
            started = time.perf_counter()
            summary = retrain(config, force=bool(runs))
            runs[name] = (summary, time.perf_counter() - started, fold_span(url, summary.run_id))
        print(f"{args.images} images, {args.folds} folds, {os.cpu_count()} CPUs; stages {local.train.stages}")
        print(f"{'executor':<18}{'run (s)':>10}{'folds (s)':>11}{'OOF score':>11}")
        for name, (summary, seconds, span) in runs.items():
            print(f"{name:<18}{seconds:>10.1f}{span:>11.1f}{summary.score_oof:>11.4f}")
        ray_run, ray_seconds, ray_span = runs.pop("ray")
        for name, (_, seconds, span) in runs.items():
            print(f"ray / {name}: run {ray_seconds / seconds:.2f}, folds {ray_span / span:.2f}")
        same_oof, ray_oof = oof(url, runs[local_same][0].run_id), oof(url, ray_run.run_id)
        difference = max(float(np.abs(same_oof[key] - ray_oof[key]).max()) for key in same_oof)
        print(f"largest difference of an out-of-fold probability, ray vs {local_same}: {difference:.4f}")


if __name__ == "__main__":
    main()
