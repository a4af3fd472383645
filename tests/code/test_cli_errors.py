"""What a user sees when something is wrong: one `error: ...` line, no traceback, no telemetry noise,
and `serve` refusing to run without a Prefect server that lasts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from foldwise.db.models import Run
from foldwise.db.session import session_scope
from foldwise.tasks.demo import deliver_drop
from tests.conftest import CONFIGS, TINY_TRAINING


def foldwise_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user without a Prefect server, profile or telemetry opt-out of their own."""
    unset = {"PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK"}
    env = {name: value for name, value in os.environ.items() if name not in unset}
    return env | {"PREFECT_HOME": str(tmp_path / "prefect-home"), **extra}


def foldwise(tmp_path: Path, *arguments: str, env: dict[str, str] | None = None, timeout: float = 300):
    """`foldwise ARGUMENTS` on a tiny demo config under `tmp_path`."""
    overrides = [
        f"source.path={tmp_path / 'source'}",
        f"data_home={tmp_path}",
        f"database_url=sqlite:///{tmp_path / 'foldwise.db'}",
        *TINY_TRAINING,
    ]
    command = [sys.executable, "-m", "foldwise", *arguments, "--config", str(CONFIGS / "demo.toml")]
    command += [part for override in overrides for part in ("--set", override)]
    return subprocess.run(
        command, env=env or foldwise_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )


def assert_one_error_line(result, expected: str) -> None:
    everything = result.stdout + result.stderr
    assert result.returncode == 2, everything
    assert "Traceback" not in everything and "Finished in state Failed" not in everything, everything
    assert result.stderr.count("error: ") == 1, everything
    message = result.stderr[result.stderr.index("error: ") :]  # a config error lists one problem a line
    assert expected in message, everything
    assert "telemetry" not in everything.lower(), everything


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_an_error_inside_the_flow_is_one_line_without_traceback(tmp_path):
    """The engine logs a task's exception with its traceback; for a FoldwiseError the console does not."""
    deliver_drop(tmp_path / "source", n_images=32)
    result = foldwise(tmp_path, "run", "--set", "train.device='cuda:7'")
    assert_one_error_line(result, "train.device = 'cuda:7' but")
    # The run used a temporary Prefect server, and said so once.
    assert result.stderr.count("temporary Prefect server") == 1, result.stderr


@pytest.mark.slow
def test_a_label_file_without_its_column_is_one_line_without_traceback(tmp_path):
    deliver_drop(tmp_path / "source", n_images=32)
    result = foldwise(tmp_path, "run", "--set", "data.label_column='no_such_column'")
    assert_one_error_line(result, "no_such_column")
    with session_scope(f"sqlite:///{tmp_path / 'foldwise.db'}") as session:
        run = session.scalar(select(Run))
        assert run.status == "failed" and f"error: {run.reason}\n" in result.stderr  # the same line


def test_a_bad_config_value_is_one_line(tmp_path):
    result = foldwise(tmp_path, "models", "--set", "folds.strategy='sideways'")
    assert_one_error_line(result, "folds.strategy")


def test_serve_refuses_without_a_prefect_server(tmp_path):
    result = foldwise(tmp_path, "serve")
    assert_one_error_line(result, "no Prefect server configured (PREFECT_API_URL)")
    assert "prefect server start" in result.stderr and "export PREFECT_API_URL=" in result.stderr


def test_serve_refuses_a_prefect_server_that_does_not_answer(tmp_path):
    api_url = f"http://127.0.0.1:{free_port()}/api"
    result = foldwise(tmp_path, "serve", env=foldwise_env(tmp_path, PREFECT_API_URL=api_url))
    assert_one_error_line(result, f"the Prefect server at {api_url} (PREFECT_API_URL) does not answer")


def test_the_active_prefect_profile_counts_as_configured(tmp_path):
    """PREFECT_API_URL may come from `prefect config set`, not the environment."""
    api_url = f"http://127.0.0.1:{free_port()}/api"
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text(
        f'active = "local"\n\n[profiles.local]\nPREFECT_API_URL = "{api_url}"\n'
    )
    for command in ("serve", "run"):
        result = foldwise(tmp_path, command)
        assert_one_error_line(result, f"the Prefect server at {api_url} (PREFECT_API_URL) does not answer")
