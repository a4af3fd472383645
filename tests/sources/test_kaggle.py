"""The real kaggle client against a local stand-in of the Kaggle API; pulls through the real flow."""

from __future__ import annotations

import io
import logging
import tarfile
import time
import zipfile

import py7zr
import pytest
from kagglesdk import kaggle_env
from sqlalchemy import func, select, text

from foldwise.config import load_config
from foldwise.db.models import Run, Sample
from foldwise.db.session import ensure_schema, get_engine, session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.archives import UnsafeArchive
from foldwise.tasks.ingest import ingest
from foldwise.tasks.sources import CREDENTIAL_HELP, FetchSummary, SourceError, fetch
from tests.conftest import CONFIGS
from tests.sources.standin import KaggleStandIn, planet_zip

COMPETITION = "planet-understanding-the-amazon-from-space"
USERNAME, KEY = "foldwise-tester", "kg-secret-7f3a9c1e5b"
TINY = [
    "folds.n_folds=2",
    "train.batch_size=4",
    "train.stages=[{size=16, epochs=1, lr=1e-2}]",
    "model.arch=resnet18",
    "model.pretrained=false",
    "gate.fraction=0",
    "thresholds.min_positives=1",
]


@pytest.fixture
def standin(monkeypatch, tmp_path):
    server = KaggleStandIn(USERNAME, KEY)
    # The client's LOCALHOST environment, pointed at the stand-in's port.
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.LOCAL, server.url)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))  # no kaggle.json of this machine
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    server.publish(COMPETITION, planet_zip())
    yield server
    server.close()


def kaggle_config(tmp_path, *extra, remote=f"source.competition={COMPETITION}"):
    return load_config(
        CONFIGS / "planet.toml",
        [
            "source.kind=kaggle",
            remote,
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path / 'home'}",
            f"database_url=sqlite:///{tmp_path / 'f.db'}",
            "source.retry_delay_seconds=0",
            *TINY,
            *extra,
        ],
    )


def file_downloads(server):
    return [call for call in server.calls if call.startswith("GET /files/")]


def test_first_pull_ingests_second_pulls_nothing_a_changed_archive_is_pulled_again(standin, tmp_path):
    config = kaggle_config(tmp_path)
    archive = config.data_home / "downloads" / "kaggle" / COMPETITION / f"{COMPETITION}.zip"
    first = ingest(config)
    assert (first.n_added, first.dataset_size) == (5, 5) and archive.is_file()
    assert (config.source.path / "train-jpg" / "train_0.jpg").is_file()
    written = archive.stat().st_mtime_ns

    # The client asks (the redirect's response headers), sees the remote copy is not newer, and
    # neither writes the archive again nor does Foldwise extract it again.
    assert fetch(config) == FetchSummary(downloaded=[], extracted=[])
    second = ingest(config)
    assert (second.n_added, second.n_unchanged) == (0, 5) and archive.stat().st_mtime_ns == written

    standin.publish(COMPETITION, planet_zip(extra_rows=2), modified=time.time() + 5)
    third = ingest(config)
    assert (third.n_added, third.n_unchanged, third.dataset_size) == (2, 5, 7)
    assert archive.stat().st_mtime_ns != written


def test_a_dataset_source_downloads_the_dataset(standin, tmp_path):
    standin.publish("nikitarom/planets-dataset", planet_zip(extra_rows=1))
    config = kaggle_config(tmp_path, remote="source.dataset=nikitarom/planets-dataset")
    assert ingest(config).n_added == 6
    assert "GET /files/nikitarom__planets-dataset.zip" in standin.calls


def test_chosen_competition_files_in_planets_original_format(standin, tmp_path):
    """train_v2.csv as is, and the images as train-jpg.tar.7z (a tar inside 7z), as Planet's files."""
    remote = tmp_path / "remote"
    zipfile.ZipFile(io.BytesIO(planet_zip())).extractall(remote)
    with tarfile.open(tmp_path / "train-jpg.tar", "w") as handle:
        handle.add(remote / "train-jpg", arcname="train-jpg")
    with py7zr.SevenZipFile(tmp_path / "train-jpg.tar.7z", "w") as handle:
        handle.write(tmp_path / "train-jpg.tar", arcname="train-jpg.tar")
    standin.publish_file(COMPETITION, "train_v2.csv", (remote / "train_v2.csv").read_bytes())
    standin.publish_file(COMPETITION, "train-jpg.tar.7z", (tmp_path / "train-jpg.tar.7z").read_bytes())
    config = kaggle_config(tmp_path, "source.files=['train_v2.csv', 'train-jpg.tar.7z']")
    assert ingest(config).n_added == 5
    assert f"GET /files/{COMPETITION}/train-jpg.tar.7z" in standin.calls
    assert f"GET /files/{COMPETITION}.zip" not in standin.calls  # only the chosen files


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
class TestThroughTheFlow:
    def test_a_503_then_200_succeeds_through_the_retries(self, standin, tmp_path):
        standin.fail_next = [503]
        summary = retrain(kaggle_config(tmp_path))
        assert summary.status == "succeeded"
        posts = [call for call in standin.calls if call.startswith("POST")]
        assert len(posts) == 2 and len(file_downloads(standin)) == 1

    def test_a_403_fails_fast_with_what_to_do(self, standin, tmp_path):
        standin.fail_next = [403, 403, 403, 403]
        with pytest.raises(SourceError, match="accept its rules"):
            retrain(kaggle_config(tmp_path))
        assert len([call for call in standin.calls if call.startswith("POST")]) == 1  # no retries
        with session_scope(f"sqlite:///{tmp_path / 'f.db'}") as session:
            run = session.scalar(select(Run))
            assert run.status == "failed" and "403" in run.reason

    def test_credentials_appear_nowhere(self, standin, tmp_path, caplog, capsys):
        """Wrong credentials, then right ones: not in logs, output, the DB, artifacts or errors."""
        caplog.set_level(logging.DEBUG)
        errors = []
        standin.auth = "Basic nobody"  # the server rejects these credentials
        with pytest.raises(SourceError, match="rejected the credentials") as rejected:
            retrain(kaggle_config(tmp_path))
        errors.append(str(rejected.value))
        standin.auth = "Basic " + __import__("base64").b64encode(f"{USERNAME}:{KEY}".encode()).decode()
        assert retrain(kaggle_config(tmp_path)).status == "succeeded"
        output = capsys.readouterr()
        everything = [caplog.text, output.out, output.err, *errors]
        engine = get_engine(f"sqlite:///{tmp_path / 'f.db'}")
        with engine.connect() as connection:
            tables = [
                row[0]
                for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
            ]
            for table in tables:
                everything += [str(row) for row in connection.execute(text(f'SELECT * FROM "{table}"'))]
        from prefect import get_client

        with get_client(sync_client=True) as client:
            everything += [str(artifact.data) for artifact in client.read_artifacts()]
        assert everything and not [chunk for chunk in everything if KEY in chunk]


def test_a_zip_slip_archive_is_refused_and_nothing_is_ingested(standin, tmp_path):
    standin.publish(COMPETITION, planet_zip(slip=True))
    config = kaggle_config(tmp_path)
    with pytest.raises(UnsafeArchive, match="leaves the target folder"):
        ingest(config)
    assert not list(tmp_path.rglob("outside.txt"))
    assert not (config.source.path / "train_v2.csv").exists()  # nothing of it was extracted
    ensure_schema(config.resolved_database_url())
    with session_scope(config.resolved_database_url()) as session:
        assert session.scalar(select(func.count()).select_from(Sample)) == 0


def test_missing_credentials_give_one_clear_error(standin, tmp_path, monkeypatch, capsys):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    with pytest.raises(SourceError) as error:
        ingest(kaggle_config(tmp_path))
    assert str(error.value) == CREDENTIAL_HELP
    assert not [call for call in standin.calls]  # nothing was asked of the server
