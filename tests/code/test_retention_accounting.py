"""The storage report's arithmetic on real files: kinds by place, and a file with two links (a fold a
later run reused) freeing its bytes only with its last link."""

from __future__ import annotations

import os

from foldwise.config import load_config
from foldwise.tasks.retention import freed_by_removing, storage_use
from foldwise.units import byte_size
from tests.conftest import CONFIGS


def test_storage_by_kind_counts_a_shared_file_once_and_frees_it_with_its_last_link(tmp_path):
    home, source = tmp_path / "home", tmp_path / "elsewhere"
    config = load_config(CONFIGS / "demo.toml", [f"data_home={home}", f"source.path={source}"])
    files = {
        "runs/1/fold0.safetensors": 1000,
        "runs/1/fold0_predictions.npz": 100,
        "runs/1/model.json": 10,
        "cache/40px/pixels.u8": 4800,
        "foldwise.db": 300,
        "foldwise.db-wal": 30,
        "pins.json": 3,
    }
    for name, size in files.items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_bytes(b"x" * size)
    (source / "images").mkdir(parents=True)
    (source / "images" / "a.png").write_bytes(b"x" * 7)
    (home / "runs" / "2").mkdir()
    os.link(home / "runs/1/fold0.safetensors", home / "runs/2/fold0.safetensors")  # a reused fold
    (home / "runs" / "2" / "latest").symlink_to(home / "runs/1/model.json")  # not a file of its own

    assert storage_use(config) == {
        "weights": 1000,
        "predictions": 100,
        "run records": 10,
        "image cache": 4800,
        "database": 330,
        "source": 7,
        "other": 3,
    }
    one, other = home / "runs/1/fold0.safetensors", home / "runs/2/fold0.safetensors"
    assert freed_by_removing([one], config)["weights"] == 0
    assert freed_by_removing([one, other], config)["weights"] == 1000
    assert [byte_size(n) for n in (999, 1536, 5 * 2**20, 3 * 2**30)] == [
        "999 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]
