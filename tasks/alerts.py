"""Alerts: what a run's end tells the people who look after the model, through the Apprise URLs and
Prefect notification blocks that `alerts` names.

Events: a run that failed or crashed, a candidate the champion gate rejected, a promotion, a gate that
failed, and a drop the champion scored worse on than expected (`prequential_alert`, for the
prequential score). Sending is best effort: an alert that cannot be sent is a warning in the log,
never a failed run. URLs are resolved (`${env:...}`, `${secret:...}`) only to send, and masked in
every log line after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select

from foldwise import metrics, secrets
from foldwise.config import AlertEvent, FoldwiseConfig
from foldwise.db import queries, registry
from foldwise.db import training as training_store
from foldwise.db.models import ModelDecision, Run
from foldwise.db.session import session_scope
from foldwise.errors import FoldwiseError
from foldwise.tasks.logs import get_logger
from foldwise.tasks.runs import describe_error

# Apprise's kinds of notification (the colour or icon of a Slack or Teams message).
NOTIFY_TYPES: dict[str, str] = {
    "failed": "failure",
    "gate-failed": "failure",
    "rejected": "warning",
    "prequential-drop": "warning",
    "promoted": "success",
}


class AlertNotSent(FoldwiseError):
    """A destination that did not take an alert; the message says why."""


@dataclass(frozen=True)
class Alert:
    event: AlertEvent
    title: str
    body: str


def title_prefix(config: FoldwiseConfig) -> str:
    return f"Foldwise {config.name}: "


def decision_alert(config: FoldwiseConfig, decision: ModelDecision) -> Alert:
    prefix, candidate = title_prefix(config), decision.candidate_run_id
    outcome = registry.decision_outcome(decision.kind, decision.promoted)
    if outcome == "gate-failed":
        stays = f"; run {decision.champion_after} stays champion" if decision.champion_after else ""
        return Alert(
            "gate-failed", f"{prefix}the champion gate of run {candidate} failed", decision.reason + stays
        )
    if outcome == "promoted":
        was = f" (was run {decision.champion_before})" if decision.champion_before else ""
        return Alert("promoted", f"{prefix}run {candidate} is the new champion{was}", decision.reason)
    return Alert(
        "rejected",
        f"{prefix}the champion gate rejected run {candidate}",
        f"{decision.reason}; run {decision.champion_after} stays champion",
    )


def run_alerts(config: FoldwiseConfig, run_id: int) -> list[Alert]:
    """What a finished run calls for: its failure, and every gate decision made while it held the
    training lock (its own, and those of earlier runs it gated for them)."""
    with session_scope(config.resolved_database_url()) as session:
        run = session.get_one(Run, run_id)
        alerts = []
        if run.status in training_store.ENDED_UNFINISHED:
            alerts.append(
                Alert("failed", f"{title_prefix(config)}run {run_id} {run.status}", run.reason or "")
            )
        if run.claimed_at is not None:  # the lock was its own from then until the next holder's claim
            released = session.scalar(select(func.min(Run.claimed_at)).where(Run.claimed_at > run.claimed_at))
            held = ModelDecision.decided_at >= run.claimed_at
            if released is not None:
                held &= ModelDecision.decided_at < released
            decisions = session.scalars(
                select(ModelDecision)
                .where(ModelDecision.kind.in_((registry.GATE, registry.GATE_FAILED)), held)
                .order_by(ModelDecision.id)
            )
            alerts += [decision_alert(config, decision) for decision in decisions]
        flow_run = f"\n(Prefect flow run {run.flow_run_id})" if run.flow_run_id else ""
    return [Alert(alert.event, alert.title, alert.body + flow_run) for alert in alerts]


def prequential_alert(
    config: FoldwiseConfig, pull_id: int, n_images: int, score: float, champion_id: int
) -> Alert | None:
    """An alert when the champion, predicting a drop's labeled images before any model trained on
    them, scored worse than its own out-of-fold score by more than `alerts.prequential_drop`."""
    with session_scope(config.resolved_database_url()) as session:
        metric = queries.run_metric(session=session, run_id=champion_id)
        expected = None if metric is None else metric.score
    if expected is None or expected - score <= config.alerts.prequential_drop:
        return None
    return Alert(
        "prequential-drop",
        f"{title_prefix(config)}the champion scored {score:.4f} on pull {pull_id}'s new images",
        f"champion run {champion_id} scored {score:.4f} on the {n_images} labeled images of pull {pull_id} "
        f"before training on them, {expected - score:.4f} below its {metrics.oof_label(metrics.name(config.thresholds))} "
        f"{expected:.4f} (more than "
        f"alerts.prequential_drop {config.alerts.prequential_drop:g}): the data may have drifted",
    )


def send_apprise(reference: str, alert: Alert) -> None:
    import apprise

    notifier = apprise.Apprise()
    if not notifier.add(secrets.resolve(reference)):
        raise AlertNotSent("Apprise cannot use this URL (an unknown scheme, or a part missing)")
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as said:
        delivered = notifier.notify(title=alert.title, body=alert.body, notify_type=NOTIFY_TYPES[alert.event])
    if not delivered:
        raise AlertNotSent(" ".join(said.getvalue().split()) or "Apprise could not deliver it")


def send_block(name: str, alert: Alert) -> None:
    from prefect.blocks.abstract import NotificationBlock
    from prefect.blocks.core import Block

    block = Block.load(name)
    if not isinstance(block, NotificationBlock):
        raise AlertNotSent(f"it is a {type(block).__name__} block, not a notification block")
    block.notify(body=alert.body, subject=alert.title)


def send(config: FoldwiseConfig, alert: Alert) -> int:
    """Send the alert (if `alerts.on` has its event) to every destination; how many took it. Never
    raises: a destination that fails is a warning in the log."""
    if alert.event not in config.alerts.on:
        return 0
    destinations = [
        (f"alerts.apprise_urls[{index}] {reference}", send_apprise, reference)
        for index, reference in enumerate(config.alerts.apprise_urls)
    ] + [(f"Prefect block {name!r}", send_block, name) for name in config.alerts.prefect_blocks]
    sent = 0
    for where, deliver, target in destinations:
        try:
            deliver(target, alert)
        except Exception as error:  # any failure to notify: logged, and the run goes on
            get_logger(__name__).warning(
                "alert %r not sent through %s: %s", alert.title, where, describe_error(error)
            )
        else:
            sent += 1
    return sent


def send_run_alerts(config: FoldwiseConfig, run_id: int) -> list[Alert]:
    """At the end of a run: the alerts it calls for, sent. Never raises."""
    if not (config.alerts.apprise_urls or config.alerts.prefect_blocks):
        return []
    try:
        alerts = run_alerts(config, run_id)
    except Exception as error:  # the database is unreachable, say: the run's own error says more
        get_logger(__name__).warning("alerts of run %d not sent: %s", run_id, describe_error(error))
        return []
    for alert in alerts:
        send(config, alert)
    return alerts
