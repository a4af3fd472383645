"""The Prefect server Foldwise talks to: the configured one, checked, or a temporary one of its own.

`foldwise serve` needs a server that lasts (its scheduler creates the runs, its UI keeps them).
`foldwise run` and `predict` use the configured server if there is one, else a temporary server that
lives exactly as long as the command. Prefect's own temporary server (`SubprocessASGIServer`) is not
used: it is stopped by an `atexit` hook, so a `kill -9` of the command leaves it running, orphaned.
Ours reads a pipe from its parent and stops at end of file, which comes however the parent ends.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from foldwise.errors import FoldwiseError

START_ONE = "start one with `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
TEMPORARY_SERVER_NOTE = (
    "no PREFECT_API_URL: using a temporary Prefect server (no UI) until this command ends; its flow runs "
    "stay in Prefect's database, which `prefect server start` shows; with that server running, "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api` to follow runs live"
)
# Prefect and its server send usage data unless told not to. Foldwise tells them in its processes (a user's
# own setting of these wins) and always on its temporary server.
NO_TELEMETRY = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
STOP_GRACE_SECONDS = 10
# The child's program. Not `python -m foldwise.cli.prefect_server`: importing the package `foldwise.cli`
# (its commands) imports this module first, and runpy would then execute it a second time as `__main__`,
# with a RuntimeWarning on every run.
SERVER_PROGRAM = (
    "import sys; from foldwise.cli.prefect_server import serve_until_parent_ends; "
    "serve_until_parent_ends(int(sys.argv[1]))"
)

logger = logging.getLogger(__name__)


class PrefectServerUnavailable(FoldwiseError):
    """No Prefect server configured where one is needed, or the configured one does not answer."""


def turn_off_telemetry() -> None:
    """For this process and its children; call before Prefect reads its settings. A user's explicit
    choice stays."""
    for name, value in NO_TELEMETRY.items():
        os.environ.setdefault(name, value)


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def check_reachable(api_url: str) -> None:
    from prefect import get_client

    with get_client(sync_client=True, httpx_settings={"timeout": 10}) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise PrefectServerUnavailable(
            f"the Prefect server at {api_url} (PREFECT_API_URL) does not answer ({problem}); "
            f"{START_ONE}, or point PREFECT_API_URL at a running server"
        )


def lasting_server() -> str:
    """The configured Prefect API, checked: what `foldwise serve` needs. Its address."""
    api_url = configured_api_url()
    if not api_url:
        raise PrefectServerUnavailable(
            "no Prefect server configured (PREFECT_API_URL): `foldwise serve` needs one that lasts, "
            f"so that its scheduler creates the runs and its UI keeps them; {START_ONE}"
        )
    check_reachable(api_url)
    return api_url


@contextmanager
def prefect_api() -> Iterator[None]:
    """Flows called inside use the configured Prefect server (checked), else a temporary one."""
    api_url = configured_api_url()
    if api_url:
        check_reachable(api_url)
        yield
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    logger.info(TEMPORARY_SERVER_NOTE)
    with (
        temporary_server() as api_url,
        # No UI is served: no "View at" links to one.
        temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ""}),
    ):
        try:
            yield
        finally:  # send the last logs and events while the server is still there
            APILogWorker.drain_all(timeout=STOP_GRACE_SECONDS)
            EventsWorker.drain_all(timeout=STOP_GRACE_SECONDS)


@contextmanager
def temporary_server(startup_timeout: float = 120) -> Iterator[str]:
    """A Prefect API server (no UI) in a child process that ends with this one. Yields its API URL."""
    from prefect.settings import get_current_settings

    # Bound and listening before the child starts, and handed over: no race for a free port.
    listener = socket.create_server(("127.0.0.1", 0))
    api_url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    env = os.environ | get_current_settings().to_environment_variables(exclude_unset=True)
    env |= {"PREFECT_UI_ENABLED": "false", **NO_TELEMETRY}
    with listener:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER_PROGRAM, str(listener.fileno())],
            stdin=subprocess.PIPE,  # the pipe whose end of file stops the server
            pass_fds=[listener.fileno()],
            env=env,
            start_new_session=True,  # Ctrl-C reaches this process only, which reports, then stops the server
        )
    try:
        wait_until_healthy(api_url, server, startup_timeout)
        yield api_url
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=STOP_GRACE_SECONDS + 5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_until_healthy(api_url: str, server: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the temporary Prefect server exited with code {server.returncode}")
        try:
            if httpx.get(f"{api_url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the temporary Prefect server did not answer at {api_url} within {timeout:g}s")


def serve_until_parent_ends(listener_fd: int) -> None:
    """The child: serve the Prefect API on the inherited socket until stdin reaches end of file."""
    import uvicorn
    from prefect.server.api.server import create_app

    config = uvicorn.Config(
        create_app(ephemeral=True, final=True),  # ephemeral: no UI and only the services runs need
        log_level="error",
        timeout_graceful_shutdown=STOP_GRACE_SECONDS,
    )
    server = uvicorn.Server(config)

    def stop_at_end_of_file() -> None:
        sys.stdin.buffer.read()  # returns when the parent closes the pipe or dies
        server.should_exit = True
        time.sleep(2 * STOP_GRACE_SECONDS)
        os._exit(1)  # the graceful shutdown hung

    threading.Thread(target=stop_at_end_of_file, daemon=True).start()
    server.run(sockets=[socket.socket(fileno=listener_fd)])
