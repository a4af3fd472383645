"""Files written whole: a failed write leaves neither the file nor its temporary copy, and a full disk or a
refused write is one DiskError naming the path and its free space (a real full disk: tests/sources/
test_disk_errors.py); neither is ever retried as transient."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from foldwise.errors import DiskError, disk_error
from foldwise.files import atomic_file, partial_path
from foldwise.tasks.ingest import is_transient
from foldwise.units import byte_size


def test_a_written_file_appears_whole_and_its_partial_copy_is_gone(tmp_path):
    target = tmp_path / "model.json"
    with atomic_file(target) as partial:
        partial.write_text("{}")
        assert not target.exists()
    assert target.read_text() == "{}" and not partial_path(target).exists()


@pytest.mark.parametrize(
    ("number", "advice"),
    [
        (errno.ENOSPC, "free some space there"),
        (errno.EDQUOT, "free some space there"),
        (errno.EACCES, "make it writable for this user"),
    ],
)
def test_a_disk_error_while_writing_names_the_path_and_leaves_nothing(tmp_path, number, advice):
    target = tmp_path / "fold0.safetensors"
    with pytest.raises(DiskError) as raised, atomic_file(target) as partial:
        partial.write_bytes(b"half a file")
        raise OSError(number, os.strerror(number))
    free = byte_size(shutil.disk_usage(tmp_path).free).split()[1]  # the unit: the figure moves
    assert str(raised.value).startswith(f"cannot write {target}: {os.strerror(number)} (")
    assert f" {free} free on its file system); {advice}" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_unchanged_and_leave_nothing(tmp_path):
    target = tmp_path / "fold0_predictions.npz"
    with pytest.raises(IsADirectoryError), atomic_file(target) as partial:
        partial.write_bytes(b"half")
        raise IsADirectoryError(errno.EISDIR, "Is a directory")
    assert list(tmp_path.iterdir()) == []


def test_the_free_space_of_a_path_not_there_yet_is_that_of_its_nearest_folder(tmp_path):
    error = disk_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "a" / "b" / "c")
    assert "unknown space" not in str(error) and "free on its file system" in str(error)


def test_a_full_disk_and_a_refused_write_are_never_transient():
    assert is_transient(OSError(errno.EIO, "I/O error")) and is_transient(ConnectionResetError())
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
        assert not is_transient(OSError(number, os.strerror(number)))
    assert not is_transient(disk_error(OSError(errno.ENOSPC, "No space left on device"), Path.cwd()))
