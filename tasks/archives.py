"""Safe extraction of zip, tar, tar.gz and .tar.7z archives (Planet's original files).

Every entry is checked before anything is written: an absolute path, a `..` that leaves the
target folder, a link or a device file refuses the whole archive (zip-slip and its kin). A
truncated or corrupt archive is detected by reading it through (CRCs, gzip trailer) first.
Extraction goes to a temporary folder beside the target and is moved in only when complete.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from foldwise.errors import FoldwiseError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.7z", ".7z")


class UnsafeArchive(FoldwiseError, ValueError):
    """An archive with an entry that would land outside the target folder, or a link: refused."""


class CorruptArchive(OSError):
    """A truncated or damaged archive (e.g. a partial download): worth downloading again."""


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def check_entry_name(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchive(
            f"{archive.name}: entry {name!r} has an absolute path; refused, nothing extracted"
        )
    if ".." in path.parts:
        raise UnsafeArchive(
            f"{archive.name}: entry {name!r} leaves the target folder; refused, nothing extracted"
        )
    return path


def zip_members(archive: Path, handle: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    for info in handle.infolist():
        check_entry_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchive(
                f"{archive.name}: entry {info.filename!r} is a link; refused, nothing extracted"
            )
    bad = handle.testzip()  # reads every entry: CRC errors and truncation show here
    if bad is not None:
        raise CorruptArchive(f"{archive.name}: entry {bad!r} is corrupt")
    return handle.infolist()


def tar_members(archive: Path, handle: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = handle.getmembers()  # reads the whole stream: a truncated gzip fails here
    for member in members:
        check_entry_name(archive, member.name)
        if member.issym() or member.islnk():
            raise UnsafeArchive(
                f"{archive.name}: entry {member.name!r} is a link; refused, nothing extracted"
            )
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchive(
                f"{archive.name}: entry {member.name!r} is a special file; refused, nothing extracted"
            )
    return members


def extract_tar(archive: Path, target: Path) -> None:
    try:
        with tarfile.open(archive) as handle:
            members = tar_members(archive, handle)
            handle.extractall(target, members=members, filter="data")
    except (tarfile.ReadError, EOFError, OSError) as error:
        raise CorruptArchive(f"{archive.name}: cannot be read as a tar archive ({error})") from None


def extract_7z(archive: Path, target: Path) -> None:
    import py7zr

    try:
        with py7zr.SevenZipFile(archive) as handle:
            for info in handle.list():
                check_entry_name(archive, info.filename)
                if info.is_symlink:
                    raise UnsafeArchive(
                        f"{archive.name}: entry {info.filename!r} is a link; refused, nothing extracted"
                    )
            bad = handle.testzip()
            if bad is not None:
                raise CorruptArchive(f"{archive.name}: entry {bad!r} is corrupt")
        with py7zr.SevenZipFile(archive) as handle:
            handle.extractall(target)
    except (py7zr.Bad7zFile, EOFError, py7zr.exceptions.ArchiveError) as error:
        raise CorruptArchive(f"{archive.name}: cannot be read as a 7z archive ({error})") from None
    for inner in sorted(target.rglob("*.tar")):  # Planet's .tar.7z holds a tar
        extract_tar(inner, inner.parent)
        inner.unlink()


def extract(archive: Path, target: Path) -> list[Path]:
    """Extract `archive` into `target` (merged with what is there); returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-extract-") as scratch:
        staging = Path(scratch)
        name = archive.name.lower()
        if name.endswith(".zip"):
            try:
                with zipfile.ZipFile(archive) as handle:
                    handle.extractall(staging, members=zip_members(archive, handle))
            except (zipfile.BadZipFile, EOFError) as error:
                raise CorruptArchive(f"{archive.name}: cannot be read as a zip archive ({error})") from None
        elif name.endswith((".7z", ".tar.7z")):
            extract_7z(archive, staging)
        else:
            extract_tar(archive, staging)
        written = []
        for source in sorted(staging.rglob("*")):
            if source.is_file():
                destination = target / source.relative_to(staging)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, destination)
                written.append(destination)
    return written
