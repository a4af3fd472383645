"""The model registry: every successful run is a model; decisions say which one is champion.

The champion is found by replaying the decisions in order: a promotion (by the gate or by hand)
puts a model on top of the stack, a rollback takes the top one off.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from foldwise.db.folds import GATE_SET, load_fold_set
from foldwise.db.models import FoldAssignment, ModelDecision, Run, Sample
from foldwise.db.queries import runs_overview
from foldwise.db.training import FAILED, SUCCEEDED

GATE, GATE_FAILED, PROMOTE, ROLLBACK = "gate", "gate-failed", "promote", "rollback"
# What became of a run: its status, or for a successful one what the gate (or a person) decided.
OUTCOMES = ("running", "promoted", "rejected", "gate-failed", "not gated", "skipped", "failed", "crashed")


def decision_outcome(kind: str, promoted: bool) -> str:
    """What a decision made of its candidate: 'gate-failed', 'promoted' or 'rejected'."""
    if kind == GATE_FAILED:
        return "gate-failed"
    return "promoted" if promoted else "rejected"


def run_outcome(status: str, decision_kind: str | None, promoted: bool = False) -> str:
    """What became of a run, from its status and its latest decision (None: never judged)."""
    if status != SUCCEEDED:
        return status if status in OUTCOMES else FAILED
    if decision_kind is None:
        return "not gated"  # its process died before the gate; the next run gates it
    return decision_outcome(decision_kind, promoted)


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
            "score_oof": run["score_oof"],  # the configured metric, cross-fitted out of fold
            "metric": run["metric"],
            "beta": run["beta"],
            "champion": run["id"] == champion,
            "decision": latest[run["id"]].reason if run["id"] in latest else "",
        }
        for run in runs_overview(session=session)
        if run["status"] == SUCCEEDED
    ]


def lineage(*, session: Session, run_id: int) -> list[int]:
    """The run and every champion its weights descend from (warm starts), newest first."""
    chain = [run_id]
    while (source := session.get_one(Run, chain[-1]).warm_start_from) is not None and source not in chain:
        chain.append(source)
    return chain


def training_folds(*, session: Session, run_ids: list[int]) -> list[dict[int, int]]:
    """For each run, the fold of every sample its fold set placed (GATE_SET: not trained on)."""
    fold_sets = [session.get_one(Run, run_id).fold_set_id for run_id in run_ids]
    return [
        load_fold_set(session=session, fold_set_id=fold_set_id).folds
        for fold_set_id in fold_sets
        if fold_set_id is not None
    ]


def ungated_runs(*, session: Session) -> list[int]:
    """Successful runs that no gate has judged: their process died before or during the gate."""
    judged = select(ModelDecision.candidate_run_id).where(ModelDecision.kind.in_((GATE, GATE_FAILED)))
    return list(
        session.scalars(select(Run.id).where(Run.status == SUCCEEDED, Run.id.not_in(judged)).order_by(Run.id))
    )


def trained_on(*, session: Session, sample_ids: list[int]) -> set[int]:
    """Those of the samples that some fold set put in a training fold."""
    found: set[int] = set()
    for start in range(0, len(sample_ids), 1000):
        chunk = sample_ids[start : start + 1000]
        found |= set(
            session.scalars(
                select(FoldAssignment.sample_id)
                .where(FoldAssignment.sample_id.in_(chunk), FoldAssignment.fold != GATE_SET)
                .distinct()
            )
        )
    return found


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
