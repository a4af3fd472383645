"""Two or more runs side by side: overall and per-class metrics, per-class changes against the first
one picked, learning curves overlaid, and only the config keys that differ."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from foldwise.dashboard import charts, data, present
from foldwise.dashboard.views.common import run_label
from foldwise.metrics import oof_label

OVERALL = {  # (split, column) -> row name; {metric}: the runs' configured metric
    ("oof", "score"): oof_label("{metric}"),
    ("gate_set", "score"): "gate set {metric}",
    ("oof", "score_in_sample"): "OOF {metric}, in-sample: thresholds scored where fitted (optimistic)",
    ("oof", "baseline_all"): "OOF baseline: every label predicted",
    ("oof", "baseline_prior"): "OOF baseline: most frequent labels predicted",
    ("oof", "fbeta_samples_global"): "OOF F-beta (samples), one global threshold, in-sample",
    ("oof", "f1_macro"): "OOF F1 (macro), in-sample",
    ("oof", "mean_average_precision"): "OOF mean average precision",
    ("gate_set", "mean_average_precision"): "gate set mean average precision",
}


def overall_table(metrics: pd.DataFrame, names: dict[int, str], metric: str) -> pd.DataFrame:
    """Rows: metrics (`score` named by `metric`); columns: the runs, then each run's change against the
    first (the baseline)."""
    rows = {key: name.format(metric=metric) for key, name in OVERALL.items()}
    table = pd.DataFrame(index=list(rows.values()), columns=list(names.values()), dtype=float)
    for row in metrics.itertuples():
        for (split, column), name in rows.items():
            if row.split == split and row.run_id in names:
                table.loc[name, names[row.run_id]] = getattr(row, column)
    baseline, *others = names.values()
    for other in others:
        table[f"{other} − {baseline}"] = table[other] - table[baseline]
    return table


def class_table(url: str, names: dict[int, str]) -> pd.DataFrame:
    """Rows: labels; columns: each run's out-of-fold F-beta, then changes against the baseline."""
    return pd.concat(
        {name: data.class_results(url, run_id).set_index("label")["fbeta"] for run_id, name in names.items()},
        axis=1,
    )


def default_runs(ids: list[int], champion_id: int | None) -> list[int]:
    """The champion and the newest other run; without a champion, the two newest runs."""
    if champion_id in ids:
        return [champion_id, next(i for i in ids if i != champion_id)]
    return ids[:2]


def render(url: str) -> None:
    st.title("Compare runs")
    runs = data.runs(url)
    succeeded = runs[runs["status"] == "succeeded"]
    ids = succeeded["id"].tolist()[::-1]
    if len(ids) < 2:
        st.info("Comparing needs two successful runs; there are not that many yet.")
        return
    if "compare" not in st.session_state or not set(st.session_state["compare"]) <= set(ids):
        st.session_state["compare"] = default_runs(ids, data.champion(url))
    labels = run_label(succeeded)
    picked = st.multiselect(
        "Runs (the first is the baseline)", ids, key="compare", format_func=labels.__getitem__
    )
    if len(picked) < 2:
        st.info("Pick two or more runs.")
        return
    names = {run_id: f"run {run_id}" for run_id in picked}
    baseline = names[picked[0]]

    st.subheader("Overall")
    metrics = succeeded.set_index("id").loc[picked, "metric_name"]
    same_metric = metrics.nunique() == 1
    overall = overall_table(
        data.run_metrics(url, tuple(picked)), names, metrics.iloc[0] if same_metric else "score"
    )
    st.dataframe(
        overall,
        placeholder=present.MISSING,
        column_config={
            column: st.column_config.NumberColumn(column, format="%+.4f" if "−" in column else "%.4f")
            for column in overall.columns
        },
        key="overall",
    )
    st.caption(
        "Samples: "
        + ", ".join(
            f"{names[r.id]} {r.dataset_size:.0f}"
            for r in succeeded[succeeded["id"].isin(picked)].itertuples()
        )
        + ("" if same_metric else "; score: " + ", ".join(f"{names[i]} {m}" for i, m in metrics.items()))
    )

    st.subheader("Per class")
    classes = class_table(url, names)
    others = [name for name in names.values() if name != baseline]
    deltas = classes[others].sub(classes[baseline], axis=0)
    left, right = st.columns(2)
    left.plotly_chart(
        charts.grouped_bars(classes, "F-beta per class (out of fold)", "F-beta"),
        key="compare_classes",
        config=charts.CONFIG,
    )
    right.plotly_chart(
        charts.grouped_bars(
            deltas, f"Change per class against {baseline}", "F-beta change", kind="change", first_color=1
        ),
        key="compare_deltas",
        config=charts.CONFIG,
    )
    table = classes.join(deltas.add_suffix(f" − {baseline}"))
    st.dataframe(
        table,
        placeholder=present.MISSING,
        column_config={
            column: st.column_config.NumberColumn(column, format="%+.4f" if "−" in column else "%.4f")
            for column in table.columns
        },
        key="compare_class_table",
    )
    st.caption("Out of fold; a blank cell: the run did not have the class.")

    st.subheader("Learning curves")
    st.caption("Each run's curve averaged over its folds, epoch by epoch across stages.")
    curves = {name: data.epochs(url, run_id) for run_id, name in names.items()}
    curves = {name: epochs for name, epochs in curves.items() if not epochs.empty}
    if curves:
        left, right = st.columns(2)
        left.plotly_chart(
            charts.runs_curves(curves, "valid_loss", "Validation loss", "loss"),
            key="compare_loss",
            config=charts.CONFIG,
        )
        right.plotly_chart(
            charts.runs_curves(curves, "fbeta", "Validation F-beta", "F-beta"),
            key="compare_fbeta",
            config=charts.CONFIG,
        )

    st.subheader("What differs")
    records = {name: data.run_record(url, run_id) for run_id, name in names.items()}
    differences = present.config_differences(
        {
            name: {
                **record["config"],
                "run": {
                    "git_commit": record["git_commit"],
                    "dataset_version": record["dataset_version"],
                    "warm_start_from": record["warm_start_from"],
                    "packages": record["package_versions"],
                },
            }
            for name, record in records.items()
        }
    )
    if differences:
        st.dataframe(pd.DataFrame(differences).T, key="config_diff")
        st.caption(
            "Config keys (and `run.`: where the run came from) whose values differ; the rest are equal."
        )
    else:
        st.caption("Their configs, code and package versions are the same.")
