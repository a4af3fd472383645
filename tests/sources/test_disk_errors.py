"""A full disk and a read-only folder, for real: the pull (or a whole `foldwise run`) runs in a subprocess
with its own user and mount namespaces (`unshare`, no privileges needed), where a tiny tmpfs or a
read-only bind mount sits in the way. The error is one line naming the path and its free space, the
download is kept, nothing is half-written, a run is recorded failed with that line, a pull is not
retried."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import zipfile

import pytest
from sqlalchemy import func, select

from foldwise.config import load_config
from foldwise.db.models import DataPull, Run
from foldwise.db.session import session_scope
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.sources import FetchSummary, fetch
from tests.code.test_cli_errors import assert_one_error_line, foldwise_env
from tests.conftest import CONFIGS, ROOT, TINY_TRAINING
from tests.sources.namespaces import in_namespace, needs_namespaces, read_only, tmpfs
from tests.sources.standin import KaggleStandIn, planet_files, zip_bytes
from tests.sources.test_kaggle import COMPETITION, KEY, USERNAME

FREE_SPACE = re.compile(r"\(\d+(\.\d)? (B|KiB|MiB) free on its file system\)")  # a tiny tmpfs
# Pulls once and prints the outcome, and what is left under a folder (seen only inside the namespace).
PULL_ONCE = """
import json, sys
from pathlib import Path
from foldwise.config import load_config
from foldwise.tasks.sources import fetch
watched, config = Path(sys.argv[1]), load_config(sys.argv[2], sys.argv[3:])
try:
    fetch(config)
    outcome = {"error": None}
except Exception as error:
    outcome = {"error": type(error).__name__, "message": str(error)}
outcome["left"] = sorted(path.relative_to(watched).as_posix() for path in watched.rglob("*"))
print(json.dumps(outcome))
"""


@pytest.fixture(autouse=True)
def _needs_namespaces():
    needs_namespaces()


def pull_in_namespace(mounts: list[list[str]], watched, overrides: list[str]) -> dict:
    """`fetch` in a subprocess after the mount commands ran in its own mount namespace."""
    command = [sys.executable, "-c", PULL_ONCE, str(watched), str(CONFIGS / "planet.toml"), *overrides]
    result = in_namespace(mounts, command, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def overrides(tmp_path, url: str, source) -> list[str]:
    return [
        "source.kind=url",
        f"source.url={url}",
        f"source.path={source}",
        f"data_home={tmp_path / 'home'}",
        f"database_url=sqlite:///{tmp_path / 'f.db'}",
    ]


def remote_archive(tmp_path, files: dict[str, bytes]):
    archive = tmp_path / "remote" / "planet.zip"
    archive.parent.mkdir()
    archive.write_bytes(zip_bytes(files))
    return archive


def test_a_full_disk_while_extracting_keeps_the_download_and_leaves_nothing(tmp_path):
    archive = remote_archive(tmp_path, {**planet_files(), "big.bin": os.urandom(1 << 20)})
    small = tmp_path / "small"  # a 256 KiB file system holds the source folder and its staging
    settings = overrides(tmp_path, f"file://{archive}", small / "source")
    outcome = pull_in_namespace([tmpfs(small, "256k")], small, settings)
    assert outcome["error"] == "DiskError"
    assert outcome["message"].startswith(f"cannot place planet.zip into {small / 'source'}: No space left")
    assert FREE_SPACE.search(outcome["message"]), outcome["message"]
    assert "; free some space there. The download is kept" in outcome["message"]
    assert outcome["left"] == ["source"]  # an empty source folder: no file, no staging folder
    # The next pull (here on the real disk) extracts the kept download without downloading it again.
    config = load_config(CONFIGS / "planet.toml", settings)
    assert fetch(config) == FetchSummary([], ["planet.zip"])
    assert (small / "source" / "big.bin").stat().st_size == 1 << 20


def test_a_read_only_folder_in_the_target_stops_extraction_before_anything_is_moved(tmp_path):
    files = {**planet_files(), "zz-extra/notes.txt": b"moved last"}
    archive = remote_archive(tmp_path, files)
    source = tmp_path / "source"
    extra = source / "zz-extra"
    extra.mkdir(parents=True)
    settings = overrides(tmp_path, f"file://{archive}", source)
    outcome = pull_in_namespace(read_only(extra), source, settings)
    assert outcome["error"] == "DiskError"
    assert outcome["message"].startswith(f"cannot place planet.zip into {source}: Read-only file system")
    assert "free on its file system); make it writable for this user" in outcome["message"]
    assert outcome["left"] == ["zz-extra"]  # train_v2.csv and train-jpg/, which sort first, were not moved
    assert sorted(path.name for path in tmp_path.iterdir()) == ["home", "remote", "source"]  # no staging
    assert fetch(load_config(CONFIGS / "planet.toml", settings)) == FetchSummary([], ["planet.zip"])


def test_a_full_disk_while_downloading_says_so_and_leaves_no_partial_file(tmp_path):
    archive = remote_archive(tmp_path, {"big.bin": os.urandom(1 << 20)})
    home = tmp_path / "home"
    outcome = pull_in_namespace(
        [tmpfs(home, "256k")],
        home,
        overrides(tmp_path, f"file://{archive}", tmp_path / "source"),
    )
    assert outcome["error"] == "DiskError"
    assert outcome["message"].startswith(f"cannot download source.url file://{archive} into {home}")
    assert "No space left on device" in outcome["message"] and FREE_SPACE.search(outcome["message"])
    assert not [name for name in outcome["left"] if name.endswith(".partial")]
    assert zipfile.is_zipfile(archive)  # the remote file is untouched


# A full disk inside a run, through the command line: one line, a failed run, nothing half-written -------


def foldwise_run_in_namespace(tmp_path, database_url: str, mount: list[str], *settings: str, timeout: float):
    """`foldwise run` on a tiny demo config with a tmpfs mounted in its way; its result, and the files
    then under the mount (path and size, seen only inside the namespace)."""
    watched, listing = mount[-1], tmp_path / "left.txt"
    overrides = [
        f"source.path={tmp_path / 'source'}",
        f"data_home={tmp_path}",
        f"database_url={database_url}",
        *TINY_TRAINING,
        *settings,
    ]
    command = [sys.executable, "-m", "foldwise", "run", "--config", str(CONFIGS / "demo.toml")]
    command += [part for override in overrides for part in ("--set", override)]
    listed = f"find {shlex.quote(watched)} -type f -printf '%P %s\\n' > {shlex.quote(str(listing))}"
    result = in_namespace([mount], command, listed, env=foldwise_env(tmp_path), cwd=ROOT, timeout=timeout)
    left = dict(line.rsplit(" ", 1) for line in listing.read_text().splitlines())
    return result, {name: int(size) for name, size in left.items()}


def the_run(database_url: str) -> Run:
    with session_scope(database_url) as session:
        [run] = session.scalars(select(Run)).all()
        session.expunge(run)
    return run


@pytest.mark.slow
def test_a_full_disk_while_a_fold_saves_its_weights_is_one_line_and_fails_the_run(tmp_path, database_url):
    deliver_drop(tmp_path / "source", n_images=32)
    runs = tmp_path / "runs"  # 1 MiB: the folds' resnet18 weights do not fit, the run's folder does
    result, left = foldwise_run_in_namespace(tmp_path, database_url, tmpfs(runs, "1m"), timeout=400)
    weights = runs / "1" / "fold0.safetensors"
    assert_one_error_line(result, f"error: cannot write {weights}: No space left on device (")
    assert FREE_SPACE.search(result.stderr) and "; free some space there" in result.stderr, result.stderr
    assert "SafetensorError" not in result.stderr + result.stdout
    assert left == {}  # no weights, no partial file
    run = the_run(database_url)
    assert run.status == "failed" and f"error: {run.reason}\n" in result.stderr  # the same line


@pytest.mark.slow
def test_a_full_disk_during_the_pull_is_one_line_and_not_retried(tmp_path, database_url):
    deliver_drop(tmp_path / "source", n_images=32)
    cache = tmp_path / "cache"  # the image cache, where the pull decodes every image into
    # A retry would wait at least 300 s (600 s, jittered): longer than the whole test may take.
    result, left = foldwise_run_in_namespace(
        tmp_path,
        database_url,
        tmpfs(cache, "16k"),
        "source.retries=2",
        "source.retry_delay_seconds=600",
        timeout=240,
    )
    assert_one_error_line(result, f"error: cannot write the image cache {cache}/")
    assert "No space left on device (" in result.stderr and FREE_SPACE.search(result.stderr), result.stderr
    assert set(left.values()) <= {0} and not [
        name for name in left if "partial" in name
    ]  # no row, whole or half
    run = the_run(database_url)
    assert run.status == "failed" and f"error: {run.reason}\n" in result.stderr
    with session_scope(database_url) as session:
        assert session.scalar(select(func.count()).select_from(DataPull)) == 0  # the pull wrote nothing


# Pulls from the Kaggle stand-in once (its endpoint patched in, as the `standin` fixture does).
KAGGLE_PULL_ONCE = """
import sys
from kagglesdk import kaggle_env
from foldwise.config import load_config
from foldwise.tasks.sources import fetch
kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.LOCAL] = sys.argv[1]
try:
    fetch(load_config(sys.argv[2], sys.argv[3:]))
except Exception as error:
    print(f"{type(error).__name__}: {error}")
"""


def test_a_full_disk_while_the_kaggle_client_downloads_says_so_and_leaves_nothing(tmp_path):
    server = KaggleStandIn(USERNAME, KEY)
    server.publish(COMPETITION, zip_bytes({**planet_files(), "big.bin": os.urandom(1 << 20)}))
    home = tmp_path / "home"
    env = os.environ | {
        "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
        "KAGGLE_CONFIG_DIR": str(tmp_path / "kaggle-config"),
        "KAGGLE_USERNAME": USERNAME,
        "KAGGLE_KEY": KEY,
    }
    env.pop("KAGGLE_API_TOKEN", None)
    settings = [
        "source.kind=kaggle",
        f"source.competition={COMPETITION}",
        f"source.path={tmp_path / 'source'}",
        f"data_home={home}",
        f"database_url=sqlite:///{tmp_path / 'f.db'}",
    ]
    command = [sys.executable, "-c", KAGGLE_PULL_ONCE, server.url, str(CONFIGS / "planet.toml"), *settings]
    listed = f"find {shlex.quote(str(home))} -type f > {shlex.quote(str(tmp_path / 'left.txt'))}"
    try:
        result = in_namespace([tmpfs(home, "256k")], command, listed, env=env, cwd=ROOT, timeout=120)
    finally:
        server.close()
    error = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    folder = home / "downloads" / "kaggle" / COMPETITION
    assert error.startswith(f"DiskError: cannot download competition {COMPETITION} into {folder}: "), error
    assert "No space left on device (" in error and "Nothing was ingested" in error
    assert (tmp_path / "left.txt").read_text() == ""  # no partial archive
