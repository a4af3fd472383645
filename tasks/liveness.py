"""Whether the process behind a heartbeat still lives, judged so that no clock and no reused PID fools it.

Heartbeats are dated by the database server's clock when written and aged by it when read, so hosts
whose clocks disagree still agree on a heartbeat's age. One dated in the future (written by a host's
clock, as older Foldwise versions did) is clock skew: it is reported, and counted as a beat from the
moment it is first seen, so it never blocks anyone for longer than the stale window. A process is
known by its PID and its start (the boot and the start tick, on Linux), so a PID that a restarted
container or the kernel gave to another process is not taken for the holder.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PROC = Path("/proc")
STARTTIME_FIELD = 22  # of /proc/<pid>/stat: clock ticks from boot to the process's start (proc(5))
# Beyond any delay between a beat's transaction and a reader's: more ahead than this is a wrong clock.
CLOCK_SKEW_TOLERANCE = timedelta(minutes=1)


def process_start(pid: int) -> str | None:
    """What tells process `pid` from any later one given the same PID: on Linux the boot id and its
    start tick; elsewhere its start time as `ps` tells it. None when it cannot be read (the process
    has ended, or neither source exists)."""
    if BOOT_ID.is_file():
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            return None
        # The command name, in parentheses, may hold spaces: the fields after it start at field 3.
        ticks = stat.rpartition(")")[2].split()[STARTTIME_FIELD - 3]
        return f"{BOOT_ID.read_text().strip()} {ticks}"
    try:
        started = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)],
            env=os.environ | {"LC_ALL": "C", "TZ": "UTC"},  # the same text whichever process asks
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return started.stdout.strip() or None


def process_alive(pid: int, start: str | None) -> bool:
    """Process `pid` exists and is the one whose start was recorded (None: recorded by an older
    Foldwise, so the PID alone tells)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start  # unreadable although it exists: give it the benefit of the doubt


def is_alive(
    host: str | None,
    pid: int | None,
    start: str | None,
    heartbeat_at: datetime,
    database_now: datetime,
    stale_after: timedelta,
) -> bool:
    """Alive: a heartbeat younger than `stale_after` by the database's clock and, on this host, its
    very process still running."""
    fresh = database_now - heartbeat_at < stale_after
    if host == platform.node() and pid:
        return fresh and process_alive(pid, start)
    return fresh


def clock_skew(moment: datetime, database_now: datetime) -> timedelta | None:
    """How far ahead of the database's clock a recorded moment is, when that is more than a delay."""
    ahead = moment - database_now
    return ahead if ahead > CLOCK_SKEW_TOLERANCE else None


def span(delta: timedelta) -> str:
    """'3 minutes', '365 days': a skew as people read it."""
    minutes = round(delta.total_seconds() / 60)
    return f"{minutes} minutes" if minutes < 2 * 24 * 60 else f"{round(minutes / (24 * 60))} days"


def database_host(url: str) -> str:
    """The host whose clock dates heartbeats: the database server's, or this one for SQLite."""
    return make_url(url).host or platform.node()


def skew_message(what: str, host: str | None, moment: datetime, ahead: timedelta, url: str) -> str:
    return (
        f"clock skew: {what} on {host or '?'} is dated {moment:%Y-%m-%d %H:%M:%S} UTC, {span(ahead)} ahead "
        f"of the database server's clock ({database_host(url)}); the clock of {host or '?'} is wrong, or an "
        "older Foldwise wrote it by that clock. Its heartbeat counts from now: silent for "
        "service.stale_after_minutes, it is taken as gone"
    )
