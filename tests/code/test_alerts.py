"""Alerts from what the database records, sent to a real webhook receiver on loopback; a destination
that fails is a warning, never an error; the config names URLs and never holds them."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from foldwise.config import ConfigError, load_config
from foldwise.db import registry
from foldwise.db.models import ModelDecision, Run, utcnow
from foldwise.db.session import ensure_schema, session_scope
from foldwise.tasks.alerts import Alert, run_alerts, send, send_run_alerts
from tests.code.webhook import closed_port, receiving
from tests.conftest import CONFIGS, SETTLED, finished_run


def config_with(tmp_path, database_url, *alerts: str):
    return load_config(
        CONFIGS / "demo.toml",
        [
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path}",
            f"database_url={database_url}",
            SETTLED,
            *alerts,
        ],
    )


def new_run(session, status: str, reason: str | None = None, claimed_at: datetime | None = None) -> int:
    run_id = finished_run(session, status, reason, flow_run_id="f-1")
    session.get_one(Run, run_id).claimed_at = claimed_at
    return run_id


def decide(
    session, at: datetime, kind: str, candidate: int, before: int | None, after: int | None, reason: str
):
    decision_id = registry.add_decision(
        session=session,
        kind=kind,
        candidate_run_id=candidate,
        champion_before=before,
        champion_after=after,
        promoted=after == candidate,
        reason=reason,
    )
    session.get_one(ModelDecision, decision_id).decided_at = at


def test_a_run_alerts_for_its_failure_and_the_gate_decisions_made_while_it_held_the_lock(
    tmp_path, database_url
):
    config = config_with(tmp_path, database_url)
    ensure_schema(database_url)
    start = utcnow() - timedelta(hours=1)

    def minute(n: int) -> datetime:
        return start + timedelta(minutes=n)

    with session_scope(database_url) as session:  # one run after the other, as the lock has them
        champion = new_run(session, "succeeded", claimed_at=minute(0))
        decide(session, minute(1), registry.GATE, champion, None, champion, "promoted: the first model")
        earlier = new_run(session, "succeeded", claimed_at=minute(2))  # died before its gate
        rejected = new_run(session, "succeeded", claimed_at=minute(3))
        decide(session, minute(4), registry.GATE, earlier, champion, earlier, "promoted: F2 0.7 vs 0.6")
        decide(session, minute(5), registry.GATE, rejected, earlier, earlier, "rejected: F2 0.5 vs 0.7")
        failed = new_run(session, "failed", reason="image folder gone", claimed_at=minute(6))
        broken_gate = new_run(session, "succeeded", claimed_at=minute(7))
        decide(
            session, minute(8), registry.GATE_FAILED, broken_gate, earlier, earlier, "gate failed: disk full"
        )
        busy = new_run(session, "skipped", reason="run 5 is training")  # never claimed the lock

    # It gated the run that died before its gate, then itself; the first decision was not its own.
    [promoted, rejection] = run_alerts(config, rejected)
    assert promoted == Alert(
        "promoted",
        f"Foldwise demo: run {earlier} is the new champion (was run {champion})",
        "promoted: F2 0.7 vs 0.6\n(Prefect flow run f-1)",
    )
    assert rejection == Alert(
        "rejected",
        f"Foldwise demo: the champion gate rejected run {rejected}",
        f"rejected: F2 0.5 vs 0.7; run {earlier} stays champion\n(Prefect flow run f-1)",
    )
    [failure] = run_alerts(config, failed)
    assert failure == Alert(
        "failed", f"Foldwise demo: run {failed} failed", "image folder gone\n(Prefect flow run f-1)"
    )
    [gate_failure] = run_alerts(config, broken_gate)
    assert gate_failure.event == "gate-failed" and gate_failure.body.startswith(
        f"gate failed: disk full; run {earlier} stays champion"
    )
    assert run_alerts(config, busy) == []


def test_alerts_reach_every_destination_that_works_and_a_failing_one_is_a_warning(
    tmp_path, monkeypatch, caplog
):
    with receiving() as receiver:
        monkeypatch.setenv("ALERT_HOOK", f"json://127.0.0.1:{receiver.port}/hook")
        monkeypatch.setenv("DEAD_HOOK", f"json://127.0.0.1:{closed_port()}/hook")
        url = f"sqlite:///{tmp_path / 'f.db'}"
        config = config_with(
            tmp_path,
            url,
            'alerts.apprise_urls=["${env:DEAD_HOOK}", "${env:ALERT_HOOK}", "${env:UNSET_HOOK}"]',
        )
        with caplog.at_level(logging.WARNING):
            sent = send(config, Alert("rejected", "run 3 rejected", "worse on the gate set"))
        assert sent == 1 and receiver.bodies("/hook") == [
            {
                "version": "1.0",
                "title": "run 3 rejected",
                "message": "worse on the gate set",
                "attachments": [],
                "type": "warning",
            }
        ]
        warnings = [r.getMessage() for r in caplog.records if r.name == "foldwise.tasks.alerts"]
        assert len(warnings) == 2 and "alerts.apprise_urls[0] ${env:DEAD_HOOK}" in warnings[0]
        assert "connection error" in warnings[0].lower() and str(receiver.port) not in " ".join(warnings)
        assert "environment variable UNSET_HOOK is not set" in warnings[1]

        only_failures = config.model_copy(deep=True)
        only_failures.alerts.on = ["failed"]
        assert send(only_failures, Alert("promoted", "run 4 promoted", "")) == 0
        # No database at all: the run's own error says more; the alert step still does not raise.
        broken = config.model_copy(update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
        with caplog.at_level(logging.WARNING):
            assert send_run_alerts(broken, 1) == []
        assert "alerts of run 1 not sent" in caplog.text
        assert len(receiver.received) == 1


def test_the_config_names_alert_urls_and_never_holds_them(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with pytest.raises(
        ConfigError, match=r"alerts\.apprise_urls: .*entries \[1\] hold an Apprise URL itself"
    ):
        config_with(tmp_path, url, 'alerts.apprise_urls=["${secret:slack}", "slack://T0/B0/secret-token"]')
    with pytest.raises(ConfigError, match=r"alerts\.prefect_blocks: .*'block-type/name'"):
        config_with(tmp_path, url, 'alerts.prefect_blocks=["ops"]')
    with pytest.raises(ConfigError, match=r"alerts\.on\.0: "):
        config_with(tmp_path, url, 'alerts.on=["sometimes"]')
    config = config_with(tmp_path, url, 'alerts.prefect_blocks=["slack-webhook/ops"]')
    assert config.alerts.on == ["failed", "rejected", "promoted", "gate-failed", "prequential-drop"]
