"""Ingest throughput: 40,000 rows x 17 labels with tiny images, on SQLite (or FOLDWISE_DATABASE_URL).

Baseline, measured in the same run: the bare work every ingest must do (read the CSV, read, hash and
decode every image, serially). Printed: rows/s of a first pull and of a re-pull, and their ratio to
the baseline.

    python benchmarks/bench_ingest.py [--rows 40000]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from foldwise.config import load_config
from foldwise.tasks.ingest import ingest

ROOT = Path(__file__).resolve().parents[1]
PLANET_TAGS = load_config(ROOT / "configs" / "planet.toml").data.vocabulary


def make_data(source: Path, n_rows: int) -> None:
    rng = np.random.default_rng(0)
    images = source / "train-jpg"
    images.mkdir(parents=True)
    chance = 0.6 / np.arange(1, 18) ** 1.1
    buffer = io.BytesIO()
    rows = []
    for index in range(n_rows):
        buffer.seek(0)
        buffer.truncate()
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        (images / f"train_{index}.jpg").write_bytes(buffer.getvalue())
        tags = [tag for tag, p in zip(PLANET_TAGS, chance, strict=True) if rng.random() < p] or ["clear"]
        rows.append((f"train_{index}", " ".join(tags)))
    pd.DataFrame(rows, columns=["image_name", "tags"]).to_csv(source / "train_v2.csv", index=False)


def baseline(source: Path) -> float:
    start = time.perf_counter()
    frame = pd.read_csv(source / "train_v2.csv", dtype=str)
    for name in frame["image_name"]:
        content = (source / "train-jpg" / f"{name}.jpg").read_bytes()
        hashlib.sha256(content).hexdigest()
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            image.convert("RGB")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=40_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_data(root / "source", args.rows)
        config = load_config(
            ROOT / "configs" / "planet.toml",
            [f"source.path={root / 'source'}", f"data_home={root / 'home'}"],
        )
        base = baseline(root / "source")
        start = time.perf_counter()
        first = ingest(config)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = ingest(config)
        again_s = time.perf_counter() - start
        assert first.n_added == args.rows and again.n_unchanged == args.rows
        print(
            f"rows: {args.rows}, labels: {len(PLANET_TAGS)}, database: {config.resolved_database_url().split(':')[0]}"
        )
        print(
            f"baseline (read CSV, hash + decode every image, serial): {base:.2f} s = {args.rows / base:,.0f} rows/s"
        )
        print(
            f"first pull:  {first_s:.2f} s = {args.rows / first_s:,.0f} rows/s  (x{base / first_s:.2f} baseline speed)"
        )
        print(
            f"re-pull:     {again_s:.2f} s = {args.rows / again_s:,.0f} rows/s  (x{base / again_s:.2f} baseline speed)"
        )


if __name__ == "__main__":
    main()
