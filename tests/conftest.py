"""Shared fixtures: real databases (a SQLite file and the PostgreSQL server), real configs, shrunk."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from foldwise.config import FoldwiseConfig, load_config
from foldwise.db import training
from foldwise.db.session import get_engine

ROOT = Path(__file__).resolve().parents[1]
# Tests write a source's files and pull at once, finished: no pull need wait for them to settle (the
# tests of files still being written set their own window).
SETTLED = "data.settle_seconds=0"
# Training small enough for a 2-core CI machine: 2 folds, one epoch at 16 px, one at 32 px; fp32, so
# that the same inputs and seed give the same weights (bf16 autocast on a CPU does not repeat exactly).
TINY_TRAINING = [
    SETTLED,
    "folds.n_folds=2",
    "train.batch_size=16",
    "train.mixed_precision='off'",
    "train.stages=[{size=16, epochs=1, lr=1e-2}, {size=32, epochs=1, lr=1e-3}]",
]
CONFIGS = ROOT / "configs"
FORMATS = Path(__file__).parent / "data" / "formats"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from test servers
# A Prefect home per test process (the temporary servers' database, profiles), set before any test
# imports Prefect: the tests never touch the user's ~/.prefect, and parallel workers (`make test` runs
# two) never share a SQLite database.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="foldwise-tests-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
POSTGRES_ADMIN_URL = os.environ.get("FOLDWISE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_database() -> Iterator[str]:
    """A fresh database on the PostgreSQL server, dropped afterwards."""
    name = f"foldwise_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg.conninfo.conninfo_to_dict(POSTGRES_ADMIN_URL)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    host, port, user = admin.get("host", "127.0.0.1"), admin.get("port", 5432), admin.get("user", "postgres")
    url = f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """Every DB test runs on both backends."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'foldwise.db'}"
        yield url
        get_engine(url).dispose()
    else:
        yield from _postgres_database()


def finished_run(
    session, status: str, reason: str | None = None, flow_run_id: str | None = None, **fields
) -> int:
    """A run recorded without training (placeholder provenance), finished with `status`; `fields`
    go to `finish_run` (pull_id, dataset_size...)."""
    run_id = training.create_run(
        session=session,
        config={},
        seed=0,
        package_versions={},
        git_commit=None,
        host="h",
        pid=1,
        flow_run_id=flow_run_id,
    )
    training.finish_run(session=session, run_id=run_id, status=status, reason=reason, **fields)
    return run_id


def write_image(path: Path, color: tuple[int, int, int] = (120, 60, 30), size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)


def tiny_demo_config(tmp_path: Path, database_url: str, *overrides: str) -> FoldwiseConfig:
    """The demo config with tiny training, its source, data home and database under `tmp_path`."""
    return load_config(
        CONFIGS / "demo.toml",
        [
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path}",
            f"database_url={database_url}",
            *TINY_TRAINING,
            *overrides,
        ],
    )


def seed_source(tmp_path: Path, seed_format: str) -> Path:
    """A source folder holding a seed's label file (first rows of the real one) and its images."""
    source = tmp_path / "source"
    layouts = {  # label file in the source folder, image folder, suffix added to the id
        "planet": ("planet_train_v2.csv", "train_v2.csv", "train-jpg", ".jpg"),
        "hpa": ("hpa_train.csv", "train.csv", "train", ".png"),
        "pascal": ("pascal_train.csv", "train.csv", "train", ""),
    }
    sample, label_file, image_dir, suffix = layouts[seed_format]
    source.mkdir(parents=True)
    shutil.copy(FORMATS / sample, source / label_file)
    lines = (FORMATS / sample).read_text().splitlines()[1:]
    for index, line in enumerate(lines):
        name = line.split(",")[0] + suffix
        write_image(source / image_dir / name, color=(index * 40 % 255, 80, 200))
    return source


def seed_config(seed_format: str, tmp_path: Path, database_url: str, *extra: str) -> FoldwiseConfig:
    """The shipped config of a seed, pointed at a temporary source, data home and database."""
    return load_config(
        CONFIGS / f"{seed_format}.toml",
        [
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path / 'home'}",
            f"database_url={database_url}",
            SETTLED,
            *extra,
        ],
    )
