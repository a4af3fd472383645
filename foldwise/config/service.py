"""How Foldwise runs as a service: schedule, locks and timeouts (`[service]`), folds on Ray (`[ray]`),
alerts (`[alerts]`) and what is kept on disk (`[retention]`)."""

from __future__ import annotations

from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from foldwise import secrets
from foldwise.config.base import Section


class ServiceConfig(Section):
    """How `foldwise serve` schedules runs, and what a run does while another one trains."""

    cron: str | None = Field(None, description="Cron schedule, e.g. '0 3 * * *'; unset: no cron.")
    interval_minutes: float | None = Field(None, gt=0, description="Or: run every this many minutes.")
    timezone: str = Field("UTC", description="IANA time zone of the cron schedule.")
    when_busy: Literal["wait", "skip"] = Field(
        "wait", description="A run that finds another one training waits for it, or is recorded as skipped."
    )
    wait_timeout_minutes: float = Field(
        360.0, gt=0, description="A waiting run gives up (skipped) after this."
    )
    stale_after_minutes: float = Field(
        10.0,
        gt=0,
        description="A run (or the holder of the training lock) whose heartbeat is this old is taken as "
        "crashed; on the same host a holder whose process is gone is taken at once.",
    )
    run_timeout_minutes: float | None = Field(
        None, gt=0, description="A run that lasts longer fails (the lock is freed); unset: none."
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where folds train: one after another in the run's process (local), or at the same "
        "time on a Ray cluster (ray: see the ray section; pip install 'foldwise[ray]').",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> ServiceConfig:
        if self.cron and self.interval_minutes:
            raise ValueError("set service.cron or service.interval_minutes, not both")
        return self


class RayConfig(Section):
    """Folds on a Ray cluster (`service.executor = "ray"`): each fold is a Prefect task that reserves
    these resources, so Ray runs as many at once as the cluster has room for."""

    address: str | None = Field(
        None,
        description="A running cluster to join: 'auto' (RAY_ADDRESS's, or the one this node belongs to), "
        "'host:6379', or 'ray://host:10001' (Ray Client); unset: each run starts a local cluster of its own, "
        "sized for this machine.",
    )
    num_cpus: float = Field(
        1.0, gt=0, description="CPUs each fold reserves; Ray sets its torch threads to match."
    )
    num_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs each fold reserves; a fraction packs folds onto one GPU (0.5: two at a time). "
        "Unset: 1 when the cluster has GPUs and train.device is not cpu, else 0.",
    )

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and not value.is_integer():
            raise ValueError("a fold may reserve a fraction of one GPU, or whole GPUs (Ray's rule)")
        return value


AlertEvent = Literal["failed", "rejected", "promoted", "gate-failed", "prequential-drop"]
ALERT_EVENTS = get_args(AlertEvent)


class AlertConfig(Section):
    """Notifications at the end of a run: through Apprise URLs (Slack, email, webhooks...) or Prefect
    notification blocks. An alert that cannot be sent is a warning in the log, never a failed run."""

    apprise_urls: list[str] = Field(
        default_factory=list,
        description="Apprise URLs, each named as ${env:NAME} or ${secret:NAME} (never written here: an "
        "Apprise URL carries its credentials, e.g. slack://TokenA/TokenB/TokenC).",
    )
    prefect_blocks: list[str] = Field(
        default_factory=list,
        description="Prefect notification blocks as 'block-type/name', e.g. 'slack-webhook/ops' (saved on "
        "the Prefect server the runs use).",
    )
    on: list[AlertEvent] = Field(
        default_factory=lambda: list(ALERT_EVENTS),
        description="What alerts: a failed or crashed run, a candidate the gate rejected, a promotion, a "
        "gate that failed, a drop whose prequential score fell (see prequential_drop).",
    )
    prequential_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="A drop the champion scores worse than its own OOF score by more than this alerts.",
    )

    @field_validator("apprise_urls")
    @classmethod
    def _named_not_written(cls, urls: list[str]) -> list[str]:
        written = [index for index, url in enumerate(urls) if not secrets.is_reference(url)]
        if written:
            raise ValueError(
                f"entries {written} hold an Apprise URL itself; name each as ${{env:NAME}} or ${{secret:NAME}} "
                "(an Apprise URL carries its credentials, and the config is stored with every run)"
            )
        return urls

    @field_validator("prefect_blocks")
    @classmethod
    def _block_type_and_name(cls, names: list[str]) -> list[str]:
        wrong = [name for name in names if name.count("/") != 1 or name.startswith("/") or name.endswith("/")]
        if wrong:
            raise ValueError(f"{wrong}: name each block 'block-type/name', e.g. 'slack-webhook/ops'")
        return names


class RetentionConfig(Section):
    """Which runs keep their files (weights, predictions): `foldwise gc`, or after each run."""

    keep_last: int = Field(
        3,
        ge=0,
        description="The newest successful runs keep their files, besides the champion, the run a "
        "rollback returns to, pinned runs and runs not gated yet.",
    )
    after_each_run: bool = Field(
        False, description="Remove what retention does not keep at the end of each successful run."
    )
