"""Safe extraction: unsafe entries, damaged archives, size, ratio and count limits, nested archives."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile

import pytest

from foldwise.config import SourceConfig
from foldwise.tasks.archives import ArchiveBudget, CorruptArchive, Limits, UnsafeArchive, extract
from tests.sources.standin import planet_files, planet_zip, seven_zip_bytes, tar_bytes, zip_bytes


def limits(tmp_path, **overrides) -> SourceConfig:
    """The source settings that bound an extraction: the defaults unless overridden."""
    return SourceConfig(path=tmp_path / "target", **overrides)


def extract_bytes(tmp_path, name: str, content: bytes, **overrides) -> list:
    archive = tmp_path / "downloads" / name
    archive.parent.mkdir(exist_ok=True)
    archive.write_bytes(content)
    return extract(archive, tmp_path / "out" / "target", limits(tmp_path, **overrides))


def assert_nothing_written(tmp_path) -> None:
    """Nothing in the target folder, and no staging folder left beside it."""
    assert list((tmp_path / "out").rglob("*")) in ([], [tmp_path / "out" / "target"])


def zip_with_mode(name: str, mode: int, content: bytes = b"x") -> bytes:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.txt", b"fine")
        archive.writestr(info, content)
    return buffer.getvalue()


def zip_with_header_field(offset: int, value: int) -> bytes:
    """A zip whose first entry says, in its central directory record, `value` at `offset`."""
    content = bytearray(zip_bytes({"a.txt": b"fine"}))
    at = content.index(b"PK\x01\x02") + offset
    content[at : at + 2] = value.to_bytes(2, "little")
    return bytes(content)


def encrypted_7z(header_too: bool) -> bytes:
    import py7zr

    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", password="secret", header_encryption=header_too) as archive:
        archive.writestr(b"hidden", "a.txt")
    return buffer.getvalue()


def tar_with_fifo() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as handle:
        info = tarfile.TarInfo("pipe")
        info.type = tarfile.FIFOTYPE
        handle.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("slip.zip", planet_zip(slip=True), "leaves the target folder"),
        ("absolute.tar.gz", tar_bytes({"/etc/evil": b"x"}), "absolute path"),
        ("dotdot.tar.gz", tar_bytes({"a/../../evil": b"x"}), "leaves the target folder"),
        ("link.tar.gz", tar_bytes({"ok.txt": b"x"}, links={"evil": "/etc/passwd"}), "is a link"),
        ("link.zip", zip_with_mode("evil", stat.S_IFLNK | 0o777, b"/etc/passwd"), "is a link"),
        ("fifo.tar", tar_with_fifo(), "is a special file"),
        ("windows.7z", seven_zip_bytes({"C:/evil": b"x"}), "absolute path"),
        ("encrypted.zip", zip_with_header_field(8, 0x1), "is encrypted"),
        ("deflate64.zip", zip_with_header_field(10, 9), "uses compression method 9"),
        ("encrypted.7z", encrypted_7z(header_too=False), "is encrypted"),
        ("encrypted-names.7z", encrypted_7z(header_too=True), "is encrypted"),
    ],
)
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, name, content, message):
    with pytest.raises(UnsafeArchive, match=message) as refused:
        extract_bytes(tmp_path, name, content)
    assert str(refused.value).startswith(f"{name}: ") and "refused" in str(refused.value)
    assert_nothing_written(tmp_path)
    assert not list(tmp_path.rglob("evil")) and not list(tmp_path.rglob("outside.txt"))


def truncated(content: bytes) -> bytes:
    return content[: len(content) * 2 // 3]


def flipped(content: bytes, at: int) -> bytes:
    return content[:at] + bytes([content[at] ^ 0x10]) + content[at + 1 :]


SOME_FILES = {f"f{i}.bin": os.urandom(2000) + bytes(30000) for i in range(4)}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.zip", b"this is not an archive at all\n" * 50),
        ("part.zip", truncated(planet_zip())),
        ("part.tar.gz", truncated(tar_bytes(SOME_FILES))),
        ("part.7z", truncated(seven_zip_bytes(SOME_FILES))),
        ("part.tar.7z", truncated(seven_zip_bytes({"x.tar": tar_bytes(SOME_FILES, mode="w")}))),
        # damage inside the deflate stream that only gzip's CRC at the end of the stream reveals
        ("damaged.tar.gz", flipped(tar_bytes(SOME_FILES), 200)),
    ],
)
def test_damaged_archives_are_corrupt_and_named(tmp_path, name, content):
    with pytest.raises(CorruptArchive, match=f"^{name}: cannot be read as a"):
        extract_bytes(tmp_path, name, content)
    assert_nothing_written(tmp_path)


def test_a_zip_bomb_is_refused_from_its_headers_by_its_compression_ratio(tmp_path):
    """1 GiB of zeros in a 1 MB zip: refused before a byte is written."""
    archive = tmp_path / "downloads" / "bomb.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle, handle.open("zeros.bin", "w") as out:
        for _ in range(64):
            out.write(bytes(1 << 24))
    assert archive.stat().st_size < 1_500_000
    with pytest.raises(UnsafeArchive) as refused:
        extract(archive, tmp_path / "out" / "target", limits(tmp_path))
    assert str(refused.value).startswith(
        "bomb.zip: its headers say it unpacks to more than 200 times its size"
    )
    assert "source.max_compression_ratio" in str(refused.value)
    assert_nothing_written(tmp_path)


def test_an_archive_that_unpacks_to_under_a_mib_is_not_held_to_the_ratio(tmp_path):
    content = zip_bytes({"labels.csv": b"id,tags\n" + b"x,clear\n" * 100_000})  # 800 kB, 400:1
    assert len(extract_bytes(tmp_path, "labels.zip", content)) == 1
    with pytest.raises(UnsafeArchive, match="source.max_compression_ratio"):
        extract_bytes(tmp_path, "labels.zip", zip_bytes({"labels.csv": b"x,clear\n" * 200_000}))


def test_bytes_written_count_against_the_limits_whatever_the_headers_said(tmp_path):
    """zipfile, tarfile and py7zr never yield more than a header declares, so the count of written
    bytes is tried on the budget itself."""
    archive = tmp_path / "a.zip"
    archive.write_bytes(bytes(100_000))
    budget = ArchiveBudget("a.zip", archive, Limits(limits(tmp_path, max_extract_gib=0.001)))
    budget.declare(10)
    budget.wrote(1_000_000)
    with pytest.raises(UnsafeArchive, match=r"^a.zip: it unpacks the download to more than 0.001 GiB"):
        budget.wrote(100_000)


def test_total_size_limit(tmp_path):
    content = zip_bytes({"a.bin": os.urandom(700_000), "b.bin": os.urandom(700_000)})
    with pytest.raises(UnsafeArchive, match=r"more than 0.001 GiB \(source.max_extract_gib\)"):
        extract_bytes(tmp_path, "big.zip", content, max_extract_gib=0.001)
    assert_nothing_written(tmp_path)
    assert len(extract_bytes(tmp_path, "big.zip", content, max_extract_gib=0.002)) == 2


def test_entry_count_limit(tmp_path):
    content = zip_bytes({f"f{i}.txt": b"" for i in range(11)})
    with pytest.raises(UnsafeArchive, match=r"more than 10 entries \(source.max_archive_members\)"):
        extract_bytes(tmp_path, "many.zip", content, max_archive_members=10)
    assert_nothing_written(tmp_path)


def test_nested_archives_count_toward_the_limits_of_the_download(tmp_path):
    """Each archive alone holds at most 6 entries, the download 2 + 6 + 6."""
    inner = zip_bytes({f"f{i}.txt": b"" for i in range(6)})
    content = zip_bytes({"one.zip": inner, "two/two.zip": inner})
    with pytest.raises(UnsafeArchive, match="^nested.zip > two/two.zip: the download holds more than 10"):
        extract_bytes(tmp_path, "nested.zip", content, max_archive_members=10)
    assert_nothing_written(tmp_path)
    # A bomb inside an archive of incompressible data: the inner archive's own ratio counts.
    bomb = zip_bytes({"zeros.bin": bytes(20 << 20)})
    content = zip_bytes({"noise.bin": os.urandom(1 << 20), "inner.zip": bomb})
    with pytest.raises(
        UnsafeArchive, match="^outer.zip > inner.zip: its headers say it unpacks to more than"
    ):
        extract_bytes(tmp_path, "outer.zip", content)
    assert_nothing_written(tmp_path)


def test_nested_archives_land_where_they_lay_and_are_not_kept(tmp_path):
    content = zip_bytes(
        {
            "labels.csv": b"id,tags\n",
            "images/part1.zip": zip_bytes({"a.jpg": b"a", "deeper/b.jpg": b"b"}),
            "images/part2.tar.gz": tar_bytes({"c.jpg": b"c"}),
            "images/part3.tgz": tar_bytes({"d.jpg": b"d"}),
            "images/part4.tar": tar_bytes({"e.jpg": b"e"}, mode="w"),
            "images/part5.7z": seven_zip_bytes({"f.jpg": b"f"}),
        }
    )
    written = extract_bytes(tmp_path, "download.zip", content)
    target = tmp_path / "out" / "target"
    expected = ["images/a.jpg", "images/c.jpg", "images/d.jpg", "images/deeper/b.jpg", "images/e.jpg"]
    expected = sorted([*expected, "images/f.jpg", "labels.csv"])
    assert sorted(path.relative_to(target).as_posix() for path in written) == expected
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == expected
    assert (target / "images" / "deeper" / "b.jpg").read_bytes() == b"b"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["target"]  # no staging left


def test_planets_competition_zip_with_train_jpg_tar_7z_inside(tmp_path):
    """Planet's competition zip holds train-jpg.tar.7z, a 7z holding a tar of the images."""
    files = planet_files()
    images = {name: content for name, content in files.items() if name.startswith("train-jpg/")}
    tar_7z = seven_zip_bytes({"train-jpg.tar": tar_bytes(images, mode="w")})
    content = zip_bytes({"train_v2.csv": files["train_v2.csv"], "train-jpg.tar.7z": tar_7z})
    extract_bytes(tmp_path, "planet-understanding-the-amazon-from-space.zip", content)
    target = tmp_path / "out" / "target"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == sorted(files)
    assert all((target / name).read_bytes() == content for name, content in files.items())


def test_an_unsafe_entry_in_a_nested_archive_refuses_the_whole_download(tmp_path):
    content = zip_bytes({"labels.csv": b"id,tags\n", "images.tar.gz": tar_bytes({"../../evil": b"x"})})
    with pytest.raises(UnsafeArchive, match=r"^download.zip > images.tar.gz: entry '../../evil' leaves"):
        extract_bytes(tmp_path, "download.zip", content)
    assert_nothing_written(tmp_path)
    assert not list(tmp_path.rglob("evil"))


def test_nesting_deeper_than_three_is_refused(tmp_path):
    content = zip_bytes({"data.txt": b"data"})
    for name in ["level3.zip", "level2.zip", "level1.zip"]:
        content = zip_bytes({name: content})
    written = extract_bytes(tmp_path, "level0.zip", content)  # 3 archives nested in the download: fine
    assert [path.read_bytes() for path in written] == [b"data"]
    with pytest.raises(
        UnsafeArchive, match="^outer.zip > level0.zip > level1.zip > level2.zip > level3.zip: "
    ):
        extract_bytes(tmp_path, "outer.zip", zip_bytes({"level0.zip": content}))


def test_an_archive_holding_an_entry_of_its_own_name(tmp_path):
    """The nested archive is read from aside, so that its entries may take its place."""
    content = zip_bytes({"data.zip": zip_bytes({"data.zip": zip_bytes({"x.txt": b"x"})})})
    written = extract_bytes(tmp_path, "outer.zip", content)
    assert [path.relative_to(tmp_path / "out" / "target").as_posix() for path in written] == ["x.txt"]


def test_extraction_merges_into_the_target(tmp_path):
    target = tmp_path / "out" / "target"
    (target / "images").mkdir(parents=True)
    (target / "images" / "old.jpg").write_bytes(b"old")
    (target / "labels.csv").write_bytes(b"old labels")
    extract_bytes(tmp_path, "update.zip", zip_bytes({"labels.csv": b"new labels", "images/new.jpg": b"new"}))
    assert (target / "labels.csv").read_bytes() == b"new labels"
    assert sorted(p.name for p in (target / "images").iterdir()) == ["new.jpg", "old.jpg"]


def test_a_folder_where_a_file_of_the_archive_goes_stops_extraction_before_anything_is_moved(tmp_path):
    (tmp_path / "out" / "target" / "labels.csv").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match="a folder is where a file of the archive goes"):
        extract_bytes(tmp_path, "update.zip", zip_bytes({"a.txt": b"first", "labels.csv": b"id,tags\n"}))
    assert not (tmp_path / "out" / "target" / "a.txt").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["target"]
