"""url sources (file:// and a local HTTP server) and safe extraction of every archive format."""

from __future__ import annotations

import io
import tarfile
import zipfile

import py7zr
import pytest

from foldwise.config import load_config
from tasks.archives import CorruptArchive, UnsafeArchive, extract
from tasks.ingest import ingest
from tasks.sources import FetchSummary, SourceError, fetch
from tests.conftest import CONFIGS
from tests.sources.standin import FileServer, planet_zip


def url_config(tmp_path, url):
    return load_config(
        CONFIGS / "planet.toml",
        [
            "source.kind=url",
            f"source.url={url}",
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path / 'home'}",
            f"database_url=sqlite:///{tmp_path / 'f.db'}",
        ],
    )


def planet_folder(tmp_path):
    folder = tmp_path / "remote"
    folder.mkdir()
    zipfile.ZipFile(io.BytesIO(planet_zip())).extractall(folder)
    return folder


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


def test_http_url_archive_with_change_detection(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "planet.tar.gz").write_bytes(
        tar_gz({"train_v2.csv": b"image_name,tags\nx,clear\n"}) if False else b""
    )
    with tarfile.open(served / "planet.tar.gz", "w:gz") as handle:
        handle.add(planet_folder(tmp_path), arcname=".")
    server = FileServer(served)
    try:
        config = url_config(tmp_path, f"{server.url}/planet.tar.gz")
        assert ingest(config).n_added == 5
        assert fetch(config) == FetchSummary([], [])
        with tarfile.open(served / "planet.tar.gz", "w:gz") as handle:  # a new version is published
            zipfile.ZipFile(io.BytesIO(planet_zip(extra_rows=2))).extractall(tmp_path / "v2")
            handle.add(tmp_path / "v2", arcname=".")
        assert fetch(config) == FetchSummary(["planet.tar.gz"], ["planet.tar.gz"])
        assert ingest(config).n_added == 2
    finally:
        server.close()


def test_http_url_that_is_missing_says_so(tmp_path):
    server = FileServer(tmp_path)
    try:
        with pytest.raises(SourceError, match="nothing at source.url"):
            fetch(url_config(tmp_path, f"{server.url}/no-such.zip"))
    finally:
        server.close()


def tar_gz(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as handle:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            handle.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            handle.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("slip.zip", None, "leaves the target folder"),
        ("absolute.tar.gz", tar_gz({"/etc/evil": b"x"}), "absolute path"),
        ("dotdot.tar.gz", tar_gz({"a/../../evil": b"x"}), "leaves the target folder"),
        ("link.tar.gz", tar_gz({"ok.txt": b"x"}, {"evil": "/etc/passwd"}), "is a link"),
    ],
)
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, name, content, message):
    archive = tmp_path / name
    archive.write_bytes(content if content is not None else planet_zip(slip=True))
    target = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchive, match=message):
        extract(archive, target)
    assert (
        list(target.rglob("*")) == []
        and not list(tmp_path.rglob("evil"))
        and not list(tmp_path.rglob("outside.txt"))
    )


@pytest.mark.parametrize("name", ["part.zip", "part.tar.gz"])
def test_truncated_archives_are_detected_as_corrupt(tmp_path, name):
    whole = (
        planet_zip()
        if name.endswith(".zip")
        else tar_gz({f"f{i}.bin": bytes(range(256)) * 400 for i in range(5)})
    )
    archive = tmp_path / name
    archive.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(CorruptArchive):
        extract(archive, tmp_path / "target")
    assert not list((tmp_path / "target").rglob("*.*"))


def test_a_corrupt_download_is_removed_so_that_the_retry_downloads_again(tmp_path):
    archive = tmp_path / "remote" / "planet.zip"
    archive.parent.mkdir()
    whole = planet_zip()
    archive.write_bytes(whole[: len(whole) // 2])
    config = url_config(tmp_path, f"file://{archive}")
    with pytest.raises(CorruptArchive):
        fetch(config)
    archive.write_bytes(whole)  # the next attempt finds the complete file
    assert fetch(config).extracted == ["planet.zip"]


def test_tar_7z_like_planets_original_files(tmp_path):
    inner = tmp_path / "train-jpg.tar"
    with tarfile.open(inner, "w") as handle:
        handle.add(planet_folder(tmp_path) / "train-jpg", arcname="train-jpg")
    with py7zr.SevenZipFile(tmp_path / "train-jpg.tar.7z", "w") as handle:
        handle.write(inner, arcname="train-jpg.tar")
    written = extract(tmp_path / "train-jpg.tar.7z", tmp_path / "target")
    assert sorted(p.name for p in written) == [f"train_{i}.jpg" for i in range(5)]
    assert not (tmp_path / "target" / "train-jpg.tar").exists()
