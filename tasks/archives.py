"""Safe extraction of the archives a remote source downloads: zip, tar (plain or compressed) and 7z
(Planet's original files are `.tar.7z`), and the archives nested in them.

An archive's own headers are checked before any of its entries is written: an absolute path, a
`..` that leaves the target folder, a link, a special file or encryption refuses the whole download
(zip-slip and its kin), and so do more entries, bytes or compression than the limits allow
(`source.max_archive_members`, `source.max_extract_gib`, `source.max_compression_ratio`: zip bombs).
A tar's headers are read through, without writing, before its first entry is written. The bytes
actually written are counted against the same limits, since a header can lie.

An archive inside the download (Planet's competition zip holds `train-jpg.tar.7z`) is extracted
where it lies: its entries land in the folder that holds it, the nested archive itself is not kept.
Nested archives count toward the download's limits, and nesting deeper than MAX_NESTING refuses it.

Everything is written to a staging folder beside the target and moved in only when the whole
download is extracted, so that a failure leaves the target folder as it was. Errors:
`UnsafeArchive` (refused), `CorruptArchive` (truncated or damaged: worth downloading again), and
the file system's own `OSError` (disk full, permissions), as it is.
"""

from __future__ import annotations

import errno
import gzip
import lzma
import shutil
import stat
import tarfile
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from foldwise.config import SourceConfig
from foldwise.errors import FoldwiseError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.7z", ".7z")
MAX_NESTING = 3  # archives inside archives inside the download: Planet's zip > .tar.7z > .tar is 2
# An archive that unpacks to less is not held to the compression ratio: tiny, highly repetitive
# files (a label file of one repeated value) compress far better than 200:1 and harm nothing.
RATIO_GRACE_BYTES = 1 << 20
GIB = 1 << 30
CHUNK = 1 << 20
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# What the readers raise for a truncated or damaged archive (gzip's BadGzipFile is an OSError, and
# must not pass for a file system error).
DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


class UnsafeArchive(FoldwiseError, ValueError):
    """An archive refused as a whole: an entry that would land outside the target folder, a link, a
    special file, encryption, or more entries, bytes or compression than the limits allow."""


class CorruptArchive(FoldwiseError, ValueError):
    """A truncated or damaged archive (e.g. a partial download): worth downloading again."""


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def refuse(label: str, name: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(f"{label}: entry {name!r} {why}; the download is refused, nothing extracted")


def check_entry_name(label: str, name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise refuse(label, name, "has an absolute path")
    if ".." in path.parts:
        raise refuse(label, name, "leaves the target folder")
    return path


class Limits:
    """What one download may unpack in all, nested archives included, and what it has used."""

    def __init__(self, source: SourceConfig):
        self.source = source
        self.members = 0
        self.declared_bytes = 0  # what the headers announce
        self.written_bytes = 0
        self.lock = threading.Lock()  # py7zr writes from several threads


class ArchiveBudget:
    """One archive's share of the download's limits; its own size bounds its compression ratio."""

    def __init__(self, label: str, archive: Path, limits: Limits):
        self.label = label
        self.size = archive.stat().st_size
        self.limits = limits
        self.declared_bytes = 0
        self.written_bytes = 0

    def declare(self, size: int) -> None:
        """An entry and its size as the archive's header gives them, before anything is written."""
        limits = self.limits
        limits.members += 1
        limits.declared_bytes += size
        self.declared_bytes += size
        self.check(self.declared_bytes, limits.declared_bytes, "its headers say it")

    def wrote(self, size: int) -> None:
        with self.limits.lock:
            self.limits.written_bytes += size
            self.written_bytes += size
            self.check(self.written_bytes, self.limits.written_bytes, "it")

    def check(self, archive_bytes: int, download_bytes: int, says: str) -> None:
        source = self.limits.source
        if self.limits.members > source.max_archive_members:
            raise UnsafeArchive(
                f"{self.label}: the download holds more than {source.max_archive_members:,} entries "
                "(source.max_archive_members); refused, nothing extracted. Raise source.max_archive_members "
                "if it is expected"
            )
        if download_bytes > source.max_extract_gib * GIB:
            raise UnsafeArchive(
                f"{self.label}: {says} unpacks the download to more than {source.max_extract_gib:g} GiB "
                "(source.max_extract_gib); refused, nothing extracted. Raise source.max_extract_gib if it "
                "is expected"
            )
        if archive_bytes > max(RATIO_GRACE_BYTES, source.max_compression_ratio * self.size):
            raise UnsafeArchive(
                f"{self.label}: {says} unpacks to more than {source.max_compression_ratio:g} times its size "
                f"of {self.size:,} bytes (source.max_compression_ratio), as a zip bomb does; refused, "
                "nothing extracted. Raise source.max_compression_ratio if the archive is trusted"
            )


def write_entry(stream: BinaryIO, destination: Path, budget: ArchiveBudget) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as out:
        while chunk := stream.read(CHUNK):
            budget.wrote(len(chunk))
            out.write(chunk)
    return destination


def unpack_zip(archive: Path, label: str, into: Path, budget: ArchiveBudget) -> list[Path]:
    with zipfile.ZipFile(archive) as handle:
        entries = []
        for info in handle.infolist():
            name = check_entry_name(label, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise refuse(label, info.filename, "is a link")
            if info.flag_bits & 0x1:
                raise refuse(label, info.filename, "is encrypted, which Foldwise cannot extract")
            if info.compress_type not in ZIP_METHODS:  # e.g. Deflate64 (9), which Windows writes
                raise refuse(
                    label,
                    info.filename,
                    f"uses compression method {info.compress_type}, not one "
                    "Python's zipfile reads: repack it as a plain zip, tar.gz or 7z",
                )
            budget.declare(info.file_size)
            entries.append((info, name))
        written = []
        for info, name in entries:
            if not info.is_dir():
                with handle.open(info) as stream:  # checks the CRC at the end
                    written.append(write_entry(stream, into / name, budget))
    return written


def unpack_tar(archive: Path, label: str, into: Path, budget: ArchiveBudget) -> list[Path]:
    with tarfile.open(archive) as handle:
        entries = []
        for member in handle:  # reads every header, the whole stream if compressed: truncation shows here
            name = check_entry_name(label, member.name)
            if member.issym() or member.islnk():
                raise refuse(label, member.name, "is a link")
            if not (member.isfile() or member.isdir()):
                raise refuse(label, member.name, "is a special file")
            budget.declare(member.size)
            entries.append((member, name))
        # tarfile stops at the end-of-archive marker; reading on to the end of a compressed stream
        # checks its trailer (gzip's CRC), where damage inside the stream shows
        while handle.fileobj.read(CHUNK):
            pass
        written = []
        for member, name in entries:
            if member.isfile():
                with handle.extractfile(member) as stream:
                    written.append(write_entry(stream, into / name, budget))
    return written


def unpack_7z(archive: Path, label: str, into: Path, budget: ArchiveBudget) -> list[Path]:
    import py7zr
    from py7zr.io import Py7zIO, WriterFactory

    class EntryWriter(Py7zIO):
        """py7zr's sink for one entry: a file under `into`, its bytes counted."""

        def __init__(self, destination: Path):
            destination.parent.mkdir(parents=True, exist_ok=True)
            self.file = destination.open("wb")

        def write(self, data: bytes | bytearray) -> int:
            budget.wrote(len(data))
            return self.file.write(data)

        def read(self, size: int | None = None) -> bytes:
            return self.file.read(size)

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.file.seek(offset, whence)

        def flush(self) -> None:
            self.file.flush()

        def size(self) -> int:
            return self.file.tell()

        def close(self) -> None:
            self.file.close()

    class EntryWriters(WriterFactory):
        def __init__(self):
            self.writers: dict[Path, EntryWriter] = {}

        def create(self, filename: str) -> Py7zIO:
            # py7zr joins the (checked) entry name to `into`; checked again, as it is what is opened
            destination = into / check_entry_name(label, Path(filename).relative_to(into).as_posix())
            self.writers[destination] = EntryWriter(destination)
            return self.writers[destination]

    try:
        with py7zr.SevenZipFile(archive) as handle:
            if handle.needs_password():
                raise py7zr.exceptions.PasswordRequired()
            for info in handle.list():
                check_entry_name(label, info.filename)
                if info.is_symlink:
                    raise refuse(label, info.filename, "is a link")
                if not (info.is_file or info.is_directory):
                    raise refuse(label, info.filename, "is a special file")
                budget.declare(info.uncompressed)
            writers = EntryWriters()
            try:
                handle.extractall(path=into, factory=writers)  # checks every CRC
            finally:
                for writer in writers.writers.values():
                    writer.close()
    except py7zr.exceptions.PasswordRequired:  # raised on opening when the headers are encrypted too
        raise UnsafeArchive(f"{label}: is encrypted, which Foldwise cannot extract; refused") from None
    except py7zr.exceptions.ArchiveError as error:
        raise CorruptArchive(f"{label}: cannot be read as a 7z archive ({error})") from None
    return list(writers.writers)


def archive_format(name: str) -> str:
    name = name.lower()
    return "zip" if name.endswith(".zip") else "7z" if name.endswith(".7z") else "tar"


UNPACKERS = {"zip": unpack_zip, "tar": unpack_tar, "7z": unpack_7z}


def unpack(archive: Path, label: str, into: Path, aside: Path, limits: Limits, depth: int) -> None:
    """Write the entries of `archive` under `into`, then unpack each archive among them where it
    lies; `aside` holds a nested archive while it is read, so that its entries may take its name."""
    budget = ArchiveBudget(label, archive, limits)
    kind = archive_format(archive.name)
    try:
        written = UNPACKERS[kind](archive, label, into, budget)
    except DAMAGED as error:
        raise CorruptArchive(f"{label}: cannot be read as a {kind} archive ({error})") from None
    for path in dict.fromkeys(written):  # an entry may repeat: the last copy was kept
        if is_archive(path.name):
            inner = f"{label} > {path.relative_to(into).as_posix()}"
            if depth >= MAX_NESTING:
                raise UnsafeArchive(
                    f"{inner}: archives nested more than {MAX_NESTING} deep; refused, nothing extracted"
                )
            held = Path(tempfile.mkdtemp(dir=aside)) / path.name
            path.replace(held)
            unpack(held, inner, path.parent, aside, limits, depth + 1)
            held.unlink()


def writable_folder(path: Path) -> Path:
    """The folder that must accept `path`: its nearest existing ancestor."""
    while not path.exists():
        path = path.parent
    return path


def move_into(staging: Path, target: Path) -> list[Path]:
    files = sorted(path for path in staging.rglob("*") if path.is_file())
    moves = [(path, target / path.relative_to(staging)) for path in files]
    # What would stop the moves half-way fails here, before anything is moved: a folder that cannot
    # be written (permissions, a read-only file system; tried with a file created unnamed and
    # dropped), a file where a folder must be, a folder where a file must be (shutil.move would
    # move the file into it).
    for folder in sorted({writable_folder(destination.parent) for _, destination in moves}):
        tempfile.TemporaryFile(dir=folder).close()
    for _, destination in moves:
        if destination.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder is where a file of the archive goes", destination)
    for path, destination in moves:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, destination)  # a rename, but for a target on another file system
    return [destination for _, destination in moves]


def extract(archive: Path, target: Path, source: SourceConfig) -> list[Path]:
    """Extract `archive` and the archives in it into `target`, merged with what is there, within the
    limits of `source`; returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-extract-") as scratch:
        content, aside = Path(scratch) / "content", Path(scratch) / "nested"
        content.mkdir()
        aside.mkdir()
        unpack(archive, archive.name, content, aside, Limits(source), depth=0)
        return move_into(content, target)
