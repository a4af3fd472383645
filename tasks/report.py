"""The run report: a markdown summary and a per-class table, published as Prefect artifacts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from foldwise import metrics
from foldwise.config import FoldwiseConfig
from foldwise.db import queries, registry
from foldwise.db.models import Run
from foldwise.db.session import session_scope


@dataclass(frozen=True)
class RunReport:
    markdown: str
    class_table: list[dict[str, Any]]  # one row per class; empty unless the run trained


def signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.4f}"


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def comparison_rows(
    run: Run, previous: Run | None, scores: dict[str, tuple[float | None, float | None]]
) -> list[str]:
    rows = ["| | this run | " + (f"run {previous.id}" if previous else "no earlier model") + " | change |"]
    rows.append("|---|---|---|---|")
    for name, (now, before) in scores.items():
        change = signed(now - before) if now is not None and before is not None else ""
        rows.append(f"| {name} | {number(now)} | {number(before)} | {change} |")
    size_before = previous.dataset_size if previous else None
    size_change = (
        f"{run.dataset_size - size_before:+d}" if size_before is not None and run.dataset_size else ""
    )
    rows.append(
        f"| data set size | {run.dataset_size} | {size_before if size_before is not None else '–'} | {size_change} |"
    )
    return rows


def build_report(config: FoldwiseConfig, run_id: int) -> RunReport:
    beta = f"F{config.thresholds.beta:g}"
    metric = metrics.name(config.thresholds)
    with session_scope(config.resolved_database_url()) as session:
        run = session.get_one(Run, run_id)
        lines = [f"## Run {run.id} of {config.name}: {run.status}", ""]
        if run.reason:
            lines += [f"**Reason:** {run.reason}", ""]
        pull = queries.data_pull(session=session, pull_id=run.pull_id)
        if pull:
            lines += [
                f"**Data pull {pull.id}** from `{pull.source}`: {pull.n_added} added, {pull.n_updated} updated, "
                f"{pull.n_unchanged} unchanged, {pull.n_rejected} rejected; data set of {pull.dataset_size} samples.",
                "",
            ]
        oof = queries.run_metric(session=session, run_id=run_id, split="oof")
        if oof is None:
            return RunReport("\n".join(lines), [])
        previous = queries.previous_succeeded_run(session=session, run_id=run_id)
        before = {}
        if previous:
            previous_oof = queries.run_metric(session=session, run_id=previous.id, split="oof")
            previous_gate_set = queries.run_metric(session=session, run_id=previous.id, split="gate_set")
            before = {
                "oof": previous_oof.score if previous_oof else None,
                "gate_set": previous_gate_set.score if previous_gate_set else None,
                "classes": {
                    row["label"]: row["fbeta"]
                    for row in queries.class_results(session=session, run_id=previous.id)
                },
            }
        decision = registry.decision_for(session=session, run_id=run_id)
        if decision:
            lines += [f"**Champion gate:** {decision.reason}", ""]
        gate_set = queries.run_metric(session=session, run_id=run_id, split="gate_set")
        scores = {metrics.oof_label(metric): (oof.score, before.get("oof"))}
        if gate_set:
            scores[f"gate set {metric}"] = (gate_set.score, before.get("gate_set"))
        in_sample = f"OOF {metric}, in-sample: thresholds scored where fitted (optimistic)"
        scores[in_sample] = (oof.score_in_sample, None)
        scores["baseline: every label predicted"] = (oof.baseline_all, None)
        scores["baseline: most frequent labels predicted"] = (oof.baseline_prior, None)
        lines += comparison_rows(run, previous, scores)
        if run.threshold_reason:
            lines += ["", f"**Thresholds:** {run.threshold_reason}"]
        classes = queries.class_results(session=session, run_id=run_id)

    earlier = before.get("classes", {})
    table = [
        {
            "label": row["label"],
            "threshold": round(row["threshold"], 3),
            "global threshold used": row["fallback"],
            beta: round(row["fbeta"], 4),
            "precision": round(row["precision"], 4),
            "recall": round(row["recall"], 4),
            "support": row["support"],
            f"{beta} change": round(row["fbeta"] - earlier[row["label"]], 4)
            if row["label"] in earlier
            else None,
        }
        for row in classes
    ]
    lines += [
        "",
        "### Per class (out-of-fold, at each class's threshold)",
        "",
        f"| label | threshold | {beta} | precision | recall | support | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table:
        marker = " (global)" if row["global threshold used"] else ""
        change = signed(row[f"{beta} change"])
        lines.append(
            f"| {row['label']} | {row['threshold']:.3f}{marker} | {row[beta]:.4f} | {row['precision']:.4f} "
            f"| {row['recall']:.4f} | {row['support']} | {change} |"
        )
    return RunReport("\n".join(lines), table)


def artifact_key(config: FoldwiseConfig, what: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes; the latest run's is shown per key."""
    return re.sub(r"[^a-z0-9]+", "-", f"{config.name}-{what}".lower()).strip("-")


def publish_report(config: FoldwiseConfig, run_id: int) -> RunReport:
    """The run's report as Prefect artifacts: its summary in Markdown, and its per-class table."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    report = build_report(config, run_id)
    create_markdown_artifact(
        markdown=report.markdown,
        key=artifact_key(config, "run-summary"),
        description=f"Foldwise run {run_id}",
    )
    if report.class_table:
        create_table_artifact(
            table=report.class_table,
            key=artifact_key(config, "class-metrics"),
            description=f"Per-class thresholds and metrics of run {run_id}",
        )
    return report
