"""Warm vs cold retraining after a 20% data drop, on the demo data (CPU unless a GPU is there).

A champion is trained cold on the first drop; then a drop of 20% more images arrives and the
ensemble is retrained twice from the same champion: warm (from the champion's weights, with
`--warm-stages`, fewer epochs) and cold (the full stages from scratch). Printed: wall time of
each and their ratio (the cold run is the baseline), and the gate F2 of each on the same gate set.

    python benchmarks/bench_warm_start.py [--first 600]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from foldwise.config import load_config
from foldwise.db.models import ModelDecision
from foldwise.db.session import session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.demo import deliver_drop

ROOT = Path(__file__).resolve().parents[1]


def gate_scores(url: str, run_id: int) -> tuple[float, float]:
    """(candidate, champion) gate F-beta of the run's gate decision."""
    with session_scope(url) as session:
        details = session.scalar(
            select(ModelDecision).where(ModelDecision.candidate_run_id == run_id)
        ).details
    return details["candidate_fbeta"], details["champion_fbeta"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--first", type=int, default=600, help="images in the first drop")
    parser.add_argument("--warm-stages", default="[{size=64, epochs=2, lr=1e-3}]")
    args = parser.parse_args()
    logging.getLogger("prefect").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        base = [
            f"source.path={home / 'source'}",
            f"data_home={home}",
            f"database_url=sqlite:///{home / 'f.db'}",
        ]
        cold = load_config(ROOT / "configs" / "demo.toml", base)
        warm = load_config(
            ROOT / "configs" / "demo.toml",
            [*base, "train.warm_start=true", f"train.warm_start_stages={args.warm_stages}"],
        )
        url = cold.resolved_database_url()
        deliver_drop(cold.source.path, n_images=args.first)
        champion = retrain(cold)
        deliver_drop(cold.source.path, n_images=args.first // 5)
        # Warm first: both retrainings then start from the same champion (a cold win could replace it).
        started = time.perf_counter()
        warm_run = retrain(warm)
        warm_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cold_run = retrain(cold, force=True)
        cold_seconds = time.perf_counter() - started
        print(f"stages cold: {[s.model_dump() for s in cold.train.stages]}; warm: {args.warm_stages}")
        warm_gate, champion_gate = gate_scores(url, warm_run.run_id)
        cold_gate, _ = gate_scores(url, cold_run.run_id)
        print(f"{'':<22}{'wall (s)':>10}{'gate F2':>10}")
        print(f"{'champion (first drop)':<22}{champion.seconds:>10.1f}{champion_gate:>10.4f}")
        print(f"{'cold retrain':<22}{cold_seconds:>10.1f}{cold_gate:>10.4f}")
        print(f"{'warm retrain':<22}{warm_seconds:>10.1f}{warm_gate:>10.4f}")
        print(f"warm / cold wall time: {warm_seconds / cold_seconds:.2f}")


if __name__ == "__main__":
    main()
