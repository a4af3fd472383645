"""Liveness that no clock and no reused PID fools: heartbeats dated and aged by the database server's
clock, heartbeats from the future reported as clock skew and never blocking past the stale window,
and holders known by their process's start, not their PID alone."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from foldwise.db import training as training_store
from foldwise.db.models import Run, TrainingLock, utcnow
from foldwise.db.session import session_scope
from foldwise.tasks import liveness
from foldwise.tasks.runs import claim_training, heartbeat, mark_crashed_runs, start_run
from tests.conftest import tiny_demo_config

ELSEWHERE = "gpu-7"


@pytest.fixture
def other_process():
    """A live process that is not the holder: what a reused PID points at."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def hold_the_lock(config, url, **lock_values) -> int:
    """A run that holds the training lock, its run and lock rows then changed to `lock_values`."""
    holder = start_run(config)
    assert claim_training(config, holder).train
    run_values = {key: value for key, value in lock_values.items() if key != "acquired_at"}
    with session_scope(url) as session:
        session.execute(update(TrainingLock).values(**lock_values))
        session.execute(update(Run).where(Run.id == holder).values(**run_values))
    return holder


def status_of(url, run_id) -> str:
    with session_scope(url) as session:
        return session.get_one(Run, run_id).status


def test_a_process_is_known_by_its_start_not_its_pid_alone(other_process):
    mine = liveness.process_start(os.getpid())
    assert mine is not None and mine == liveness.process_start(os.getpid())
    assert liveness.process_start(other_process.pid) not in (None, mine)
    if liveness.BOOT_ID.is_file():  # Linux: the boot, then the start tick
        assert mine.startswith(liveness.BOOT_ID.read_text().strip() + " ")
    assert liveness.process_alive(other_process.pid, liveness.process_start(other_process.pid))
    assert liveness.process_alive(other_process.pid, None)  # recorded by an older Foldwise: the PID tells
    assert not liveness.process_alive(other_process.pid, mine)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert liveness.process_start(finished.pid) is None
    assert not liveness.process_alive(finished.pid, None)


def test_heartbeats_are_dated_by_the_database_in_utc_whatever_its_time_zone(tmp_path, database_url):
    """A PostgreSQL session in UTC+14: its now() read as a local time would be 14 hours off."""
    url = database_url
    if make_url(url).get_backend_name() == "postgresql":
        url = make_url(url).update_query_dict({"options": "-c timezone=Pacific/Kiritimati"})
        url = url.render_as_string(hide_password=False)
    config = tiny_demo_config(tmp_path, url)
    run_id = start_run(config)
    assert claim_training(config, run_id).train
    with heartbeat(config, run_id, f"run {run_id}", every=0.05):
        time.sleep(0.3)
    real_now = datetime.now(UTC).replace(tzinfo=None)
    with session_scope(url) as session:
        database_now = training_store.database_now(session=session)
        lock = session.scalar(select(TrainingLock))
        run = session.get_one(Run, run_id)
    assert abs(database_now - real_now) < timedelta(seconds=5)
    for moment in (lock.acquired_at, lock.heartbeat_at, run.heartbeat_at):
        assert timedelta(0) <= database_now - moment < timedelta(seconds=5)
    assert lock.heartbeat_at > lock.acquired_at  # beaten since it was claimed
    assert lock.process_start == run.process_start == liveness.process_start(os.getpid())


@pytest.mark.parametrize(
    ("offset", "alive", "hint"),
    [
        (timedelta(days=365), True, "365 days ahead of the database server's clock: clock skew on gpu-7?"),
        (
            timedelta(minutes=10),
            True,
            "10 minutes ahead of the database server's clock: clock skew on gpu-7?",
        ),
        (timedelta(seconds=-20), True, None),
        (timedelta(minutes=-30), False, None),
    ],
    ids=["a-year-ahead", "ten-minutes-ahead", "seconds-ago", "half-an-hour-ago"],
)
def test_heartbeats_from_the_future_and_the_past(tmp_path, database_url, caplog, offset, alive, hint):
    """Another host's lock (stale window: 10 minutes). From the future: alive for now, said to be clock
    skew with the host named, in the refusal and the log; from the past: alive while fresh."""
    config = tiny_demo_config(tmp_path, database_url, "service.when_busy=skip")
    dated = utcnow() + offset
    holder = hold_the_lock(config, database_url, host=ELSEWHERE, heartbeat_at=dated, acquired_at=dated)
    caplog.set_level(logging.WARNING)
    decision = claim_training(config, start_run(config))
    assert decision.train is not alive
    if alive:
        assert f"run {holder} is training (since {dated:%Y-%m-%d %H:%M:%S} UTC" in decision.reason
    if hint:
        assert hint in decision.reason
        assert (
            f"clock skew: the heartbeat of run {holder} on gpu-7 is dated {dated:%Y-%m-%d %H:%M:%S} UTC"
            in (caplog.text)
        )
        assert hint in claim_training(config, start_run(config)).reason  # still said on the next refusal
    else:
        assert "clock skew" not in decision.reason + caplog.text
    assert status_of(database_url, holder) == ("running" if alive else "crashed")


def test_a_heartbeat_from_the_future_never_blocks_past_the_stale_window(tmp_path, database_url):
    """A year ahead, a lock from another host that stays silent: a waiting run claims it after the
    stale window (3 s here), counted from when the skew was first seen; its run is marked crashed."""
    stale = "service.stale_after_minutes=0.05"
    config = tiny_demo_config(tmp_path, database_url, stale, "service.wait_timeout_minutes=1")
    a_year_ahead = utcnow() + timedelta(days=365)
    holder = hold_the_lock(
        config, database_url, host=ELSEWHERE, heartbeat_at=a_year_ahead, acquired_at=a_year_ahead
    )
    started = time.monotonic()
    decision = claim_training(config, start_run(config), poll_seconds=0.1)
    assert decision.train, decision.reason
    assert 3.0 <= time.monotonic() - started < 10.0
    assert status_of(database_url, holder) == "crashed"


def test_a_run_with_a_heartbeat_from_the_future_is_crashed_after_the_stale_window(
    tmp_path, database_url, caplog
):
    config = tiny_demo_config(tmp_path, database_url, "service.stale_after_minutes=0.02")
    silent = start_run(config)
    with session_scope(database_url) as session:
        session.execute(
            update(Run)
            .where(Run.id == silent)
            .values(host=ELSEWHERE, heartbeat_at=utcnow() + timedelta(days=365))
        )
    caplog.set_level(logging.WARNING)
    assert mark_crashed_runs(config) == []
    assert f"clock skew: the heartbeat of run {silent} on gpu-7" in caplog.text
    time.sleep(1.5)
    assert mark_crashed_runs(config) == [silent]


def process_starts(other_process) -> dict[str, str | None]:
    """The start recorded for the holder, as each case leaves it; `other_process` holds the PID now."""
    ticks = liveness.process_start(other_process.pid).rpartition(" ")[2]
    return {
        "reused-pid": liveness.process_start(os.getpid()),  # an earlier process had the PID
        "restarted-container": f"00000000-0000-0000-0000-000000000000 {ticks}",  # another boot
    }


@pytest.mark.parametrize("case", ["reused-pid", "restarted-container"])
def test_a_dead_holder_whose_pid_belongs_to_another_process_is_taken_over_at_once(
    tmp_path, database_url, other_process, case
):
    """The stale window is the default 10 minutes, and the holder's heartbeat is fresh: only its
    process's start tells that the process with its PID is not the holder."""
    config = tiny_demo_config(tmp_path, database_url, "service.when_busy=skip")
    holder = hold_the_lock(
        config, database_url, pid=other_process.pid, process_start=process_starts(other_process)[case]
    )
    next_run = start_run(config)
    assert claim_training(config, next_run).train
    with session_scope(database_url) as session:
        assert session.scalar(select(TrainingLock)).holder == f"run {next_run}"
        crashed = session.get_one(Run, holder)
    assert (
        crashed.status == "crashed" and f"process {other_process.pid} on {platform.node()}" in crashed.reason
    )


@pytest.mark.parametrize("recorded", ["its-start", "none"])
def test_a_live_holder_is_not_taken_over(tmp_path, database_url, other_process, recorded):
    """The holder's own process (or one recorded by an older Foldwise, without its start) is alive."""
    config = tiny_demo_config(tmp_path, database_url, "service.when_busy=skip")
    start = liveness.process_start(other_process.pid) if recorded == "its-start" else None
    holder = hold_the_lock(config, database_url, pid=other_process.pid, process_start=start)
    refused = claim_training(config, start_run(config))
    assert not refused.train and f"run {holder} is training" in refused.reason
    assert status_of(database_url, holder) == "running"
