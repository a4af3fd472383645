"""A command in its own user and mount namespaces (`unshare`, no privileges needed), with mounts made
there first: a tiny tmpfs (a full disk) or a read-only bind mount, seen by that command alone."""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

NAMESPACES = ["unshare", "--user", "--map-root-user", "--mount"]


@functools.cache
def namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*NAMESPACES, "true"], capture_output=True).returncode == 0


def needs_namespaces() -> None:
    if not namespaces_work():
        pytest.skip("needs unprivileged user and mount namespaces (`unshare --user --map-root-user --mount`)")


def tmpfs(folder: Path, size: str) -> list[str]:
    """The mount command of a tmpfs of `size` over `folder` (created if need be)."""
    folder.mkdir(parents=True, exist_ok=True)
    return ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]


def read_only(folder: Path) -> list[list[str]]:
    """The mount commands that make `folder` read-only."""
    return [["mount", "--bind", str(folder), str(folder)], ["mount", "-o", "remount,bind,ro", str(folder)]]


def in_namespace(
    mounts: list[list[str]], command: list[str], then: str = "", **options
) -> subprocess.CompletedProcess:
    """`command` after the mount commands, in new namespaces; `then`, a shell line, runs after it
    (still inside: it sees the mounts) and the command's exit status is kept. `options` go to
    subprocess.run (text output is captured)."""
    setup = " && ".join(shlex.join(mount) for mount in mounts)
    script = f'{setup} && {{ "$@"; status=$?; {then or ":"}; exit $status; }}'
    return subprocess.run(
        [*NAMESPACES, "sh", "-c", script, "sh", *command], capture_output=True, text=True, **options
    )
