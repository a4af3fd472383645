"""url sources (file:// and a local HTTP server): change detection, archives in a pull, which errors are
retried (through the real flow), and no credential of a URL in any message."""

from __future__ import annotations

import io
import socket
import tarfile
import zipfile

import pytest

from foldwise.config import load_config
from foldwise.flows.retrain import retrain
from foldwise.tasks.archives import CorruptArchive, UnsafeArchive
from foldwise.tasks.ingest import ingest, is_transient
from foldwise.tasks.sources import FetchSummary, SourceError, TransientSourceError, fetch, redact
from tests.conftest import CONFIGS
from tests.sources.standin import FileServer, planet_files, planet_zip, seven_zip_bytes, tar_bytes, zip_bytes

CANARY = "canary-pw-5d1e"


def url_config(tmp_path, url, *extra):
    return load_config(
        CONFIGS / "planet.toml",
        [
            "source.kind=url",
            f"source.url={url}",
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path / 'home'}",
            f"database_url=sqlite:///{tmp_path / 'f.db'}",
            "source.retry_delay_seconds=0",
            *extra,
        ],
    )


def planet_folder(tmp_path):
    folder = tmp_path / "remote"
    folder.mkdir()
    zipfile.ZipFile(io.BytesIO(planet_zip())).extractall(folder)
    return folder


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    server = FileServer(folder)
    yield folder, server
    server.close()


def test_file_url_archive_is_pulled_once_and_again_when_it_changes(tmp_path):
    archive = tmp_path / "remote" / "planet.zip"
    archive.parent.mkdir()
    archive.write_bytes(planet_zip())
    config = url_config(tmp_path, f"file://{archive}")
    assert ingest(config).n_added == 5
    assert fetch(config) == FetchSummary([], [])  # unchanged: nothing downloaded or extracted
    archive.write_bytes(planet_zip(extra_rows=3))
    assert fetch(config) == FetchSummary(["planet.zip"], ["planet.zip"])
    assert ingest(config).n_added == 3


def test_file_url_folder_is_mirrored(tmp_path):
    folder = planet_folder(tmp_path)
    config = url_config(tmp_path, f"file://{folder}")
    assert ingest(config).n_added == 5
    assert fetch(config).downloaded == []
    (folder / "train-jpg" / "train_0.jpg").write_bytes((folder / "train-jpg" / "train_1.jpg").read_bytes())
    assert fetch(config).downloaded == ["train-jpg/train_0.jpg"]
    assert ingest(config).n_updated == 1


def test_http_url_archive_with_change_detection(tmp_path, served):
    folder, server = served
    with tarfile.open(folder / "planet.tar.gz", "w:gz") as handle:
        handle.add(planet_folder(tmp_path), arcname=".")
    config = url_config(tmp_path, f"{server.url}/planet.tar.gz")
    assert ingest(config).n_added == 5
    assert fetch(config) == FetchSummary([], [])
    with tarfile.open(folder / "planet.tar.gz", "w:gz") as handle:  # a new version is published
        zipfile.ZipFile(io.BytesIO(planet_zip(extra_rows=2))).extractall(tmp_path / "v2")
        handle.add(tmp_path / "v2", arcname=".")
    assert fetch(config) == FetchSummary(["planet.tar.gz"], ["planet.tar.gz"])
    assert ingest(config).n_added == 2


def test_planets_competition_zip_with_its_tar_7z_is_ingested(tmp_path):
    files = planet_files()
    images = {name: content for name, content in files.items() if name.startswith("train-jpg/")}
    archive = tmp_path / "remote" / "planet.zip"
    archive.parent.mkdir()
    archive.write_bytes(
        zip_bytes(
            {
                "train_v2.csv": files["train_v2.csv"],
                "train-jpg.tar.7z": seven_zip_bytes({"train-jpg.tar": tar_bytes(images, mode="w")}),
            }
        )
    )
    config = url_config(tmp_path, f"file://{archive}")
    assert ingest(config).n_added == 5
    assert not list(config.source.path.rglob("*.tar*"))


def test_a_404_says_nothing_is_there_and_is_not_retried(tmp_path, served):
    _, server = served
    url = f"http://reader:{CANARY}@{server.url.removeprefix('http://')}/no-such.zip"
    with pytest.raises(SourceError, match="nothing at source.url http://reader:\\*\\*\\*@") as missing:
        fetch(url_config(tmp_path, url))
    assert CANARY not in str(missing.value) and not is_transient(missing.value)


def test_a_refused_connection_is_transient(tmp_path):
    for path in ["planet.zip", "folder/"]:  # fsspec fails differently for a file and a folder
        url = f"http://reader:{CANARY}@127.0.0.1:{closed_port()}/{path}"
        with pytest.raises(TransientSourceError, match="ClientConnectorError") as refused:
            fetch(url_config(tmp_path, url))
        assert CANARY not in str(refused.value) and is_transient(refused.value)


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (503, TransientSourceError, "cannot fetch source.url"),
        (429, TransientSourceError, "cannot fetch source.url"),
        (403, SourceError, r"no access to source.url .* \(403\)"),
        (401, SourceError, r"no access to source.url .* \(401\)"),
        (400, SourceError, "answered 400"),
    ],
)
def test_http_statuses(tmp_path, served, status, error, message):
    folder, server = served
    (folder / "planet.zip").write_bytes(planet_zip())
    server.fail_next = [status] * 2  # fsspec asks with HEAD, then GET
    with pytest.raises(error, match=message) as failed:
        fetch(url_config(tmp_path, f"{server.url}/planet.zip"))
    assert is_transient(failed.value) == (error is TransientSourceError)
    assert fetch(url_config(tmp_path, f"{server.url}/planet.zip")).extracted == ["planet.zip"]


def test_an_unknown_url_scheme_says_so(tmp_path):
    with pytest.raises(SourceError, match="cannot open source.url nosuch://"):
        fetch(url_config(tmp_path, f"nosuch://user:{CANARY}@host/data.zip"))


def test_a_corrupt_download_fails_once_is_deleted_and_downloaded_again_by_the_next_pull(tmp_path):
    archive = tmp_path / "remote" / "planet.zip"
    archive.parent.mkdir()
    whole = planet_zip()
    archive.write_bytes(whole[: len(whole) // 2])
    config = url_config(tmp_path, f"file://{archive}")
    download = config.data_home / "downloads" / "url"
    with pytest.raises(CorruptArchive) as corrupt:
        fetch(config)
    assert str(corrupt.value).startswith("planet.zip: cannot be read as a zip archive")
    assert "was deleted: the next pull downloads it again" in str(corrupt.value)
    assert not is_transient(corrupt.value)
    assert not list(download.rglob("planet.zip")) and not (config.source.path / "train_v2.csv").exists()
    archive.write_bytes(whole)
    assert fetch(config) == FetchSummary(["planet.zip"], ["planet.zip"])


def test_a_refused_archive_is_kept_and_not_downloaded_again(tmp_path):
    archive = tmp_path / "remote" / "planet.zip"
    archive.parent.mkdir()
    archive.write_bytes(planet_zip(slip=True))
    config = url_config(tmp_path, f"file://{archive}")
    with pytest.raises(UnsafeArchive, match="leaves the target folder"):
        fetch(config)
    with pytest.raises(UnsafeArchive, match="leaves the target folder"):  # refused again, not re-downloaded
        fetch(config)
    assert len(list((config.data_home / "downloads").rglob("planet.zip"))) == 1


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://u:pw@h/x.zip", "http://u:***@h/x.zip"),
        ("postgresql+psycopg://me:p@ss:w@db:5432/f", "postgresql+psycopg://me:***@db:5432/f"),
        ("s3://k:s@b/x", "s3://k:***@b/x"),
        ("https://h/x.zip?sv=1&sig=AbC%2F&se=2", "https://h/x.zip?sv=1&sig=***&se=2"),
        ("https://h/x?X-Amz-Credential=AK%2F1&n=1", "https://h/x?X-Amz-Credential=***&n=1"),
        ("http://h:8080/a user@example.com", "http://h:8080/a user@example.com"),
        ("file:///a:b@c", "file:///a:b@c"),
    ],
)
def test_redact_hides_the_password_of_a_url(text, shown):
    assert redact(text) == shown


def pull_attempts() -> int:
    """How often the latest pull-data task ran (1 + its retries), as the Prefect server records it."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        pulls = [run for run in client.read_task_runs() if run.name.startswith("pull-data")]
    return max(pulls, key=lambda run: run.created).run_count


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
class TestThroughTheFlow:
    def test_a_refused_connection_is_retried(self, tmp_path):
        url = f"http://reader:{CANARY}@127.0.0.1:{closed_port()}/planet.zip"
        with pytest.raises(TransientSourceError) as refused:
            retrain(url_config(tmp_path, url, "source.retries=2"))
        assert pull_attempts() == 3 and CANARY not in str(refused.value)

    def test_a_404_fails_at_once(self, tmp_path, served):
        _, server = served
        with pytest.raises(SourceError, match="nothing at source.url"):
            retrain(url_config(tmp_path, f"{server.url}/no-such.zip", "source.retries=2"))
        assert pull_attempts() == 1 and server.calls == ["HEAD /no-such.zip", "GET /no-such.zip"]

    def test_a_truncated_archive_fails_once_and_the_next_pull_downloads_it_again(self, tmp_path, served):
        folder, server = served
        whole = planet_zip()
        (folder / "planet.zip").write_bytes(whole[: len(whole) // 2])
        config = url_config(tmp_path, f"{server.url}/planet.zip", "source.retries=2")
        with pytest.raises(CorruptArchive, match="^planet.zip: cannot be read as a zip archive"):
            retrain(config)
        assert pull_attempts() == 1 and server.calls.count("GET /planet.zip") == 2  # info, then download
        (folder / "planet.zip").write_bytes(whole)
        assert ingest(config).n_added == 5
        assert server.calls.count("GET /planet.zip") == 4
