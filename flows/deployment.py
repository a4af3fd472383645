"""The `retrain` deployment that `foldwise serve` registers: schedule, defaults and limits from the config."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    FlowRun,
    StateType,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.exceptions import TerminationSignal
from prefect.runner import Runner
from prefect.schedules import Cron, Interval, Schedule
from prefect.utilities.urls import url_for

from foldwise.config import ConfigError, FoldwiseConfig, ServiceConfig
from foldwise.flows.retrain import retrain

DEFAULT_SCHEDULER_LOOP_SECONDS = 60.0  # Prefect's PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS


def schedules(service: ServiceConfig) -> list[Schedule]:
    """The deployment's schedule: cron, interval, or none (manual runs only)."""
    if service.cron:
        return [Cron(service.cron, timezone=service.timezone)]
    if service.interval_minutes:
        return [Interval(timedelta(minutes=service.interval_minutes), timezone=service.timezone)]
    return []


def concurrency_limit(service: ServiceConfig) -> ConcurrencyLimitConfig | None:
    """'wait': Prefect queues a second run of the deployment until the first ends. 'skip': no Prefect
    limit, so the second run starts and the DB training lock records it as skipped, with the reason
    (Prefect's CANCEL_NEW would cancel it without a word in the database)."""
    if service.when_busy == "wait":
        return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    return None


def build_deployment(config: FoldwiseConfig) -> RunnerDeployment:
    """The deployment of this config. Refused when a setting holds a credential itself: its
    parameters are stored by Prefect, so it must name the credential instead."""
    literal = config.literal_credentials()
    if literal:
        raise ConfigError(
            f"{', '.join(literal)} hold(s) a credential: a deployment's parameters are stored by Prefect, so "
            "name it instead, as ${env:NAME} (an environment variable of the worker) or ${secret:NAME} "
            "(a Prefect Secret block), e.g. postgresql+psycopg://user:${env:DB_PASSWORD}@host/db"
        )
    try:
        schedule = schedules(config.service)
        deployment = retrain.to_deployment(
            name=config.name,
            schedules=schedule,
            parameters={"config": config.model_dump(mode="json"), "force": False},
            concurrency_limit=concurrency_limit(config.service),
            enforce_parameter_schema=True,  # the server refuses a bad parameter before a run starts
            entrypoint_type=EntrypointType.MODULE_PATH,  # the installed package, whatever the cwd
            description=f"Retrain the {config.name} fold ensemble when new labeled data arrives.",
            tags=["foldwise"],
        )
    except ValueError as error:  # Prefect's own validation of the cron string
        raise ConfigError(f"service schedule: {error}") from None
    return deployment


def describe_schedule(service: ServiceConfig) -> str:
    """The schedule in words, for `foldwise serve`'s output."""
    if service.cron:
        return f"cron '{service.cron}' ({service.timezone})"
    if service.interval_minutes:
        return f"every {service.interval_minutes:g} minutes"
    return "no schedule (manual runs only)"


def serve_deployment(deployment: RunnerDeployment, registered: Callable[[UUID], None]) -> None:
    """Register the deployment, call `registered` with its id, then run what the server schedules
    until Ctrl-C or SIGTERM; the schedule is paused then, so that runs do not pile up unserved."""
    runner = Runner(pause_on_shutdown=True)
    runner.handle_sigterm = stop_serving  # Prefect 3.8's exits from inside the event loop, with tracebacks
    registered(runner.add_deployment(deployment))
    try:
        asyncio.run(run_until_stopped(runner))
    except (KeyboardInterrupt, TerminationSignal):
        pass


async def run_until_stopped(runner: Runner) -> None:
    asyncio.get_running_loop().set_exception_handler(ignore_cancelled_callbacks)
    await runner.start()


def ignore_cancelled_callbacks(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Prefect 3.8's control channel asks a connection handler cancelled at shutdown for its exception,
    which raises CancelledError in a callback: a traceback on every stop while a flow run is connected."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


def stop_serving(*_signal) -> None:
    """SIGTERM stops serving as Ctrl-C does: the runner's tasks are cancelled, the schedule paused."""
    raise KeyboardInterrupt


def deployment_url(deployment_id: UUID) -> str | None:
    """The deployment's page in the Prefect UI."""
    return url_for("deployment", obj_id=deployment_id)


def scheduler_loop_seconds() -> float:
    """How often the server's scheduler creates runs; Prefect's default if the server does not say
    (Prefect Cloud has no settings endpoint)."""
    with get_client(sync_client=True) as client:
        try:
            settings = client.request("GET", "/admin/settings").json()
            return float(settings["server"]["services"]["scheduler"]["loop_seconds"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError):  # no such endpoint, or no such setting
            return DEFAULT_SCHEDULER_LOOP_SECONDS


def wait_for_scheduled_run(deployment_id: UUID, timeout: float, poll_seconds: float = 2.0) -> FlowRun | None:
    """The deployment's next scheduled flow run, once the server's scheduler has created one; None if it
    created none within `timeout` seconds."""
    scheduled = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
    )
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            upcoming = client.read_flow_runs(
                flow_run_filter=scheduled, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1
            )
            if upcoming or time.monotonic() >= deadline:
                return upcoming[0] if upcoming else None
            time.sleep(poll_seconds)
