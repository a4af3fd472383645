"""The `retrain` deployment that `foldwise serve` registers: schedule, defaults and limits from the config."""

from __future__ import annotations

from datetime import timedelta

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from flows.retrain import retrain
from foldwise.config import ConfigError, FoldwiseConfig, ServiceConfig


def schedules(service: ServiceConfig) -> list[Schedule]:
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
    if service.cron:
        return f"cron '{service.cron}' ({service.timezone})"
    if service.interval_minutes:
        return f"every {service.interval_minutes:g} minutes"
    return "no schedule (manual runs only)"
