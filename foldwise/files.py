"""Writing files so that a reader never sees half of one, and a full disk is a message, not a trace.

`atomic_file` writes under a temporary name beside the file and renames it into place only when the
block succeeded; whatever happens, the temporary file is gone afterwards. `reported_disk_errors`
turns a full disk or a refused write into a `DiskError` that names the path and its free space.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from foldwise.errors import disk_error, is_disk_error


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (hidden, and never matched as data)."""
    return path.with_name(f".{path.name}.partial")


@contextmanager
def reported_disk_errors(path: Path, doing: str | None = None, then: str = "") -> Iterator[None]:
    """A full disk or a refused write in the block as a DiskError about `path` (see `disk_error`)."""
    try:
        yield
    except OSError as error:
        if not is_disk_error(error):
            raise
        raise disk_error(error, path, doing, then) from None


@contextmanager
def atomic_file(path: Path, doing: str | None = None, then: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write to; it becomes `path` only if the block succeeds. A
    full disk or a refused write is a DiskError (`doing` and `then` as in `disk_error`)."""
    partial = partial_path(path)
    with reported_disk_errors(path, doing, then):
        try:
            yield partial
            os.replace(partial, path)
        finally:  # inside: a full disk's message then gives the free space once the partial file is gone
            partial.unlink(missing_ok=True)
