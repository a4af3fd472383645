"""The processes `foldwise` starts end with it: the temporary Prefect server of `run`, even after a
`kill -9`, and the Streamlit server of `dashboard` on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from foldwise.tasks.demo import deliver_drop
from tests.code.test_cli_errors import foldwise_env, free_port
from tests.conftest import CONFIGS, TINY_TRAINING

pytestmark = pytest.mark.slow


def start_foldwise(tmp_path, *arguments: str) -> subprocess.Popen:
    overrides = [
        f"source.path={tmp_path / 'source'}",
        f"data_home={tmp_path}",
        f"database_url=sqlite:///{tmp_path / 'foldwise.db'}",
        *TINY_TRAINING,
    ]
    command = [sys.executable, "-m", "foldwise", *arguments, "--config", str(CONFIGS / "demo.toml")]
    command += [part for override in overrides for part in ("--set", override)]
    log = (tmp_path / "foldwise.log").open("w")
    return subprocess.Popen(command, env=foldwise_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition, timeout: float, what: str, log_path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout}s:\n{log_path.read_text()}"
        time.sleep(0.2)


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def test_a_killed_run_leaves_no_prefect_server_behind(tmp_path):
    deliver_drop(tmp_path / "source", n_images=32)
    run = start_foldwise(tmp_path, "run")
    log_path = tmp_path / "foldwise.log"
    try:
        # Killed mid-flow, while the temporary Prefect server answers the flow's engine.
        wait_for(lambda: "Beginning flow run" in log_path.read_text(), 120, "no flow run began", log_path)
        left = psutil.Process(run.pid).children(recursive=True)
        assert any("prefect_server" in " ".join(p.cmdline()) or "uvicorn" in p.cmdline() for p in left), left
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    finally:
        run.kill()
    wait_for(lambda: all(map(gone, left)), 20, f"processes still run: {left}", log_path)


def test_dashboard_stops_streamlit_on_sigterm_and_frees_its_port(tmp_path):
    port = free_port()
    dashboard = start_foldwise(tmp_path, "dashboard", "--port", str(port))
    log_path = tmp_path / "foldwise.log"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 120, "the dashboard did not answer", log_path)
        (streamlit,) = psutil.Process(dashboard.pid).children()
        dashboard.send_signal(signal.SIGTERM)
        dashboard.wait(timeout=15)
    finally:
        dashboard.kill()
    assert gone(streamlit)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a dashboard started again does
        probe.bind(("127.0.0.1", port))  # nothing listens there any more
