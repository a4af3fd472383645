"""One run: its outcome and progress, learning curves, per-class results (out of fold and on the gate set),
diagnostics of a class, folds, change against the champion, and where it came from."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from foldwise import metrics
from foldwise.dashboard import charts, data, present
from foldwise.dashboard.views.common import badges, choose_run, flow_run_text, live_run
from foldwise.db.models import utcnow


def class_table(oof: pd.DataFrame, gate_set: pd.DataFrame) -> pd.DataFrame:
    """Per class: threshold, then OOF and gate set metrics side by side (gate set columns blank without one)."""
    columns = [
        "label",
        "threshold",
        "per_class_threshold",
        "fallback",
        "fbeta",
        "precision",
        "recall",
        "support",
    ]
    table = oof[columns]
    if (table["per_class_threshold"].isna() | (table["per_class_threshold"] == table["threshold"])).all():
        table = table.drop(columns="per_class_threshold")  # the per-class thresholds are the ones in use
    if gate_set.empty:
        gate_set = pd.DataFrame(columns=["label", "fbeta", "precision", "recall", "support"])
    return table.merge(
        gate_set[["label", "fbeta", "precision", "recall", "support"]],
        on="label",
        how="left",
        suffixes=("", "_gate_set"),
    )


def class_diagnostics(url: str, run: dict, classes: pd.DataFrame, beta: str) -> None:
    """For one class: its precision-recall curve and precision, recall and F-beta against the threshold,
    from the run's out-of-fold predictions and the samples' labels."""
    label = st.selectbox("Class", classes["label"].tolist(), key="class")
    chosen = classes[classes["label"] == label].iloc[0]
    vocabulary = tuple(run["vocabulary"])
    probabilities, truth = data.oof_scores(url, run["id"], vocabulary)
    column = vocabulary.index(label) if label in vocabulary else None
    curve = data.threshold_curve(url, run["id"], label)
    left, right = st.columns(2)
    if column is not None and truth[:, column].any():
        scores, positives = probabilities[:, column], truth[:, column]
        precision, recall, thresholds = metrics.precision_recall_curve(positives, scores)
        predicted = scores >= chosen["threshold"]
        [precision_at], [recall_at] = metrics.class_precision_recall(predicted[:, None], positives[:, None])
        at_threshold = (float(precision_at), float(recall_at))
        ap = metrics.average_precision(positives, scores)
        left.plotly_chart(
            charts.precision_recall(precision, recall, at_threshold, label, ap),
            key="precision_recall",
            config=charts.CONFIG,
        )
        if curve:
            right.plotly_chart(
                charts.against_threshold(
                    curve, thresholds, precision[:-1], recall[:-1], chosen["threshold"], label, run["beta"]
                ),
                key="threshold_curve",
                config=charts.CONFIG,
            )
    else:
        left.caption(f"No out-of-fold prediction of run {run['id']} has {label}: no precision-recall curve.")
    st.caption(
        f"{label}: threshold {chosen['threshold']:.3f}, {beta} {chosen['fbeta']:.4f}, "
        f"precision {chosen['precision']:.3f}, recall {chosen['recall']:.3f}, support {chosen['support']}"
        + (" (too few positives: the global threshold)" if chosen["fallback"] else "")
    )


def comparison_choices(run: dict, champion_id: int | None, decision: dict | None) -> dict[str, int]:
    """What the change table can compare with, the default first: the champion, else (for the champion
    itself) the champion it replaced; then the previous successful run."""
    choices = {}
    if champion_id is not None and champion_id != run["id"]:
        choices[f"the champion (run {champion_id})"] = champion_id
    elif decision is not None and decision["champion_before"] is not None:
        choices[f"the champion it replaced (run {decision['champion_before']})"] = decision["champion_before"]
    if run["previous_id"] is not None and run["previous_id"] not in choices.values():
        choices[f"the previous successful run (run {run['previous_id']})"] = run["previous_id"]
    return choices


def change_table(
    url: str, run: dict, classes: pd.DataFrame, champion_id: int | None, decision: dict | None
) -> None:
    st.subheader("Change per class")
    choices = comparison_choices(run, champion_id, decision)
    if not choices:
        st.caption("Nothing to compare with: this is the first successful run.")
        return
    against = st.radio("Against", list(choices), horizontal=True, key="change_against")
    other = choices[against]
    previous = data.class_results(url, other)
    merged = classes.merge(previous, on="label", how="outer", suffixes=("", "_other"))
    merged["change"] = merged["fbeta"] - merged["fbeta_other"]
    beta = f"F{run['beta']:g}"
    st.dataframe(
        merged[["label", "fbeta", "fbeta_other", "change", "support", "support_other"]],
        hide_index=True,
        placeholder=present.MISSING,
        column_config={
            "fbeta": st.column_config.NumberColumn(f"{beta} run {run['id']}", format="%.4f"),
            "fbeta_other": st.column_config.NumberColumn(f"{beta} run {other}", format="%.4f"),
            "change": st.column_config.NumberColumn("change", format="%+.4f"),
            "support": st.column_config.NumberColumn(f"support run {run['id']}", format="%d"),
            "support_other": st.column_config.NumberColumn(f"support run {other}", format="%d"),
        },
        key="deltas_table",
    )
    st.caption(f"Out-of-fold, against run {other}; a blank cell: the class is new or gone.")


def provenance(run: dict) -> str:
    """Where the run came from, one fact a line (Markdown: the Prefect link stays a link)."""
    warm = run["warm_start_from"]
    facts = {
        "git commit": f"`{run['git_commit']}`" if run["git_commit"] else "unknown (not a git checkout)",
        "packages": present.value_text(run["package_versions"]),
        "host, pid": f"{run['host'] or '?'}, {run['pid'] if run['pid'] is not None else '?'}",
        "Prefect": flow_run_text(run["flow_run_id"]),
        "seed": str(run["seed"]),
        "data set version": run["dataset_version"] or present.MISSING,
        "data pull, fold set": f"pull {run['pull_id'] or present.MISSING}, fold set {run['fold_set_id'] or present.MISSING}",
        "warm start": f"from the champion run {warm}" if warm is not None else "no: trained from scratch",
        "started, finished": f"{present.moment(run['started_at'])}, {present.moment(run['finished_at'])}",
        "time spent": ", ".join(f"{phase} {present.duration(s)}" for phase, s in run["phase_seconds"].items())
        or present.MISSING,
        "notes": "; ".join(run["notes"]) or "none",
    }
    return "\n".join(f"- **{name}**: {value}" for name, value in facts.items())


def render(url: str) -> None:
    st.title("Run detail")
    runs = data.runs(url)
    run_id = choose_run(runs)
    run = data.run_record(url, run_id)
    row = runs[runs["id"] == run_id].iloc[0]
    champion_id = data.champion(url)
    decision = present.latest_decisions(data.decisions(url)).get(run_id)
    beta = f"F{run['beta']:g}"

    st.markdown(badges(row["outcome"], bool(row["champion"])))
    cols = st.columns(4)
    metric = metrics.metric_name(
        run["config"].get("thresholds", {}).get("metric", "fbeta_samples"), run["beta"]
    )
    cols[0].metric(
        metrics.oof_label(metric),
        present.score(row["score_oof"]),
        help="cross-fitted: thresholds never scored on the predictions they were fitted to",
    )
    cols[1].metric(
        f"Gate set {metric}", present.score(row["score_gate_set"]), help="on the gate set, never trained on"
    )
    cols[2].metric(
        "Samples", present.MISSING if pd.isna(row["dataset_size"]) else f"{row['dataset_size']:.0f}"
    )
    if run["status"] == "running":
        cols[3].metric("Running for", present.duration((utcnow() - run["started_at"]).total_seconds()))
    else:
        cols[3].metric("Duration", present.duration(row["duration_s"]))
    if run["reason"]:
        st.caption(f"Reason: {run['reason']}")
    if decision is not None:
        st.caption(f"Gate ({present.moment(decision['decided_at'])}): {decision['reason']}")

    epoch_rows = None
    if run["status"] == "running":
        epoch_rows = live_run(url, run_id)
    epochs = data.epochs(url, run_id, epoch_rows)
    if not epochs.empty:
        left, right = st.columns(2)
        left.plotly_chart(charts.loss_curves(epochs), key="loss_curves", config=charts.CONFIG)
        right.plotly_chart(charts.fbeta_curves(epochs, run["beta"]), key="fbeta_curves", config=charts.CONFIG)

    classes = data.class_results(url, run_id)
    if classes.empty:
        st.info(f"Run {run_id} has no per-class results ({row['outcome']}).")
    else:
        gate_set = data.class_results(url, run_id, "gate_set")
        st.subheader("Per class")
        if run["threshold_reason"]:
            st.caption(f"Thresholds ({run['threshold_strategy']}): {run['threshold_reason']}")
        table = class_table(classes, gate_set)
        scores = table.set_index("label")[["fbeta", "fbeta_gate_set"]]
        scores.columns = ["out of fold", "gate set"]
        st.plotly_chart(
            charts.grouped_bars(scores, f"{beta} per class at its threshold", beta),
            key="class_bars",
            config=charts.CONFIG,
        )
        score_format = {"format": "%.4f"}
        st.dataframe(
            table,
            hide_index=True,
            placeholder=present.MISSING,
            column_config={
                "threshold": st.column_config.NumberColumn("threshold", format="%.3f"),
                "per_class_threshold": st.column_config.NumberColumn("per-class candidate", format="%.3f"),
                "fallback": st.column_config.CheckboxColumn("global threshold"),
                # At thresholds fitted to these same predictions: in-sample.
                "fbeta": st.column_config.NumberColumn(f"OOF {beta} (in-sample)", **score_format),
                "precision": st.column_config.NumberColumn("OOF precision (in-sample)", **score_format),
                "recall": st.column_config.NumberColumn("OOF recall (in-sample)", **score_format),
                "support": st.column_config.NumberColumn("OOF support", format="%d"),
                "fbeta_gate_set": st.column_config.NumberColumn(f"gate set {beta}", **score_format),
                "precision_gate_set": st.column_config.NumberColumn("gate set precision", **score_format),
                "recall_gate_set": st.column_config.NumberColumn("gate set recall", **score_format),
                "support_gate_set": st.column_config.NumberColumn("gate set support", format="%d"),
            },
            key="thresholds_table",
        )
        st.subheader("One class")
        class_diagnostics(url, run, classes, beta)

    if run["fold_set_id"] is not None:
        counts = data.fold_label_counts(url, run["fold_set_id"])
        if not counts.empty:
            pivot = counts.pivot(index="label", columns="fold", values="count").add_prefix("fold ")
            st.plotly_chart(
                charts.grouped_bars(pivot, "Samples per label in each fold", "samples", kind="count"),
                key="fold_counts",
                config=charts.CONFIG,
            )

    if not classes.empty:
        change_table(url, run, classes, champion_id, decision)

    st.subheader("Provenance")
    st.markdown(provenance(run))
    with st.expander("Config this run ran with (credentials masked)"):
        st.dataframe(
            pd.DataFrame(present.flat_config(run["config"]).items(), columns=["key", "value"]),
            hide_index=True,
            key="config",
        )
