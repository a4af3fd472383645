"""The base of every error Foldwise reports to a person.

A `FoldwiseError` says what was wrong and what to do in its message. The command line prints it
as one `error: ...` line, and the run record keeps the same line: no traceback, since it is not
a bug. Any other exception is a bug or an outage and keeps its traceback.

A full disk or a folder this user may not write to is such an error (`DiskError`), raised where the
file is written: the message names the path and the free space of its file system.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from foldwise.units import byte_size

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
NO_PERMISSION = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class FoldwiseError(Exception):
    """An error the user can act on; its message is the whole story."""


class DiskError(FoldwiseError):
    """A file this machine could not write: its disk is full, or this user may not write there."""


def is_disk_error(error: BaseException) -> bool:
    """A full disk or a refused write: the user must act, so never retried."""
    return isinstance(error, OSError) and error.errno in NO_SPACE | NO_PERMISSION


def free_space(path: Path) -> str:
    """The free space of the file system `path` is on (or would be, if it does not exist yet)."""
    for folder in (path, *path.parents):
        try:
            return byte_size(shutil.disk_usage(folder).free)
        except OSError:
            continue
    return "unknown space"


def disk_error(error: OSError, path: Path, doing: str | None = None, then: str = "") -> DiskError:
    """`error` (a disk error of writing under `path`) as one line: what failed, where, the free space,
    what to do. `doing` names the path (default: 'cannot write PATH'); `then` says what was kept."""
    advice = "free some space there" if error.errno in NO_SPACE else "make it writable for this user"
    line = (
        f"{doing or f'cannot write {path}'}: {error.strerror or error} "
        f"({free_space(Path(path))} free on its file system); {advice}"
    )
    return DiskError(f"{line}. {then}" if then else line)
