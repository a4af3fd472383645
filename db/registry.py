"""The model registry: every successful run is a model; decisions say which one is champion.

The champion is found by replaying the decisions in order: a promotion (by the gate or by hand)
puts a model on top of the stack, a rollback takes the top one off.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ModelDecision, Sample
from db.queries import runs_overview
from db.training import SUCCEEDED

GATE, PROMOTE, ROLLBACK = "gate", "promote", "rollback"


def champion_stack(*, session: Session) -> list[int]:
    stack: list[int] = []
    for decision in session.scalars(select(ModelDecision).order_by(ModelDecision.id)):
        if decision.kind == ROLLBACK:
            stack.pop()
        elif decision.promoted:
            stack.append(decision.candidate_run_id)
    return stack


def current_champion(*, session: Session) -> int | None:
    stack = champion_stack(session=session)
    return stack[-1] if stack else None


def add_decision(
    *,
    session: Session,
    kind: str,
    candidate_run_id: int | None,
    champion_before: int | None,
    champion_after: int | None,
    promoted: bool,
    reason: str,
    details: dict[str, Any] | None = None,
) -> int:
    decision = ModelDecision(
        kind=kind,
        candidate_run_id=candidate_run_id,
        champion_before=champion_before,
        champion_after=champion_after,
        promoted=promoted,
        reason=reason,
        details=details or {},
    )
    session.add(decision)
    session.flush()
    return decision.id


def decisions(*, session: Session) -> list[ModelDecision]:
    return list(session.scalars(select(ModelDecision).order_by(ModelDecision.id)))


def models(*, session: Session) -> list[dict[str, Any]]:
    """Every successful run with its latest decision; the champion flagged."""
    champion = current_champion(session=session)
    latest: dict[int, ModelDecision] = {}
    for decision in decisions(session=session):
        if decision.candidate_run_id is not None:
            latest[decision.candidate_run_id] = decision
    return [
        {
            "run_id": run["id"],
            "finished_at": run["finished_at"],
            "dataset_size": run["dataset_size"],
            "fbeta_oof": run["fbeta_oof"],
            "champion": run["id"] == champion,
            "decision": latest[run["id"]].reason if run["id"] in latest else "",
        }
        for run in runs_overview(session=session)
        if run["status"] == SUCCEEDED
    ]


def gate_memberships(*, session: Session) -> dict[int, bool | None]:
    return dict(session.execute(select(Sample.id, Sample.in_gate_set)).tuples().all())


def set_gate_memberships(*, session: Session, members: dict[int, bool]) -> None:
    for value in (True, False):
        ids = [sample_id for sample_id, member in members.items() if member is value]
        for start in range(0, len(ids), 1000):
            session.execute(
                update(Sample).where(Sample.id.in_(ids[start : start + 1000])).values(in_gate_set=value)
            )


def decision_for(*, session: Session, run_id: int) -> ModelDecision | None:
    return session.scalar(
        select(ModelDecision)
        .where(ModelDecision.candidate_run_id == run_id)
        .order_by(ModelDecision.id.desc())
        .limit(1)
    )
