"""Did last night's run go well, which model is in use and why, and is the model getting better?"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from foldwise import metrics
from foldwise.dashboard import charts, data, present
from foldwise.dashboard.views.common import badges, live_run

RECENT_DECISIONS = 10


def champion_card(runs: pd.DataFrame, decisions: list[dict], champion_id: int | None) -> None:
    """The champion, since when and why; before any decision, the best model so far."""
    scored = runs[runs["status"] == "succeeded"].dropna(subset=["score_oof"])
    if champion_id is None:
        if scored.empty:
            st.metric("Champion", "none yet")
            st.caption("No run has produced a model yet.")
            return
        best = scored.loc[scored["score_oof"].idxmax()]
        st.metric(f"Best model: run {best['id']}", present.score(best["score_oof"]))
        st.caption(
            f"{metrics.oof_label(best['metric_name'])}; no gate has chosen a champion yet: the best out-of-fold score."
        )
        return
    row = runs[runs["id"] == champion_id].iloc[0]
    st.metric(f"Champion: run {champion_id}", present.score(row["score_oof"]))
    st.caption(metrics.oof_label(row["metric_name"]))
    decision = present.champion_decision(decisions, champion_id)
    if decision is not None:
        st.caption(
            f"champion: run {champion_id} since {present.moment(decision['decided_at'])}, because {decision['reason']}"
        )
    st.caption(f"trained on {row['dataset_size']:.0f} samples, finished {present.moment(row['finished_at'])}")


def scores_figure(runs: pd.DataFrame, champion_id: int | None) -> go.Figure:
    """OOF (cross-fitted) and gate set scores of every successful run; markers coloured by the
    gate outcome."""
    scored = runs[runs["status"] == "succeeded"]
    name = data.newest_metric_name(runs)
    hover = [
        f"run {r.id}, {r.outcome}, finished {present.moment(r.finished_at)}" for r in scored.itertuples()
    ]
    figure = go.Figure()
    figure.add_scatter(
        x=scored["id"],
        y=scored["score_oof"],
        mode="lines",
        name="out of fold (cross-fitted)",
        line={"color": charts.PALETTE[0]},
        hoverinfo="skip",
    )
    figure.add_scatter(
        x=scored["id"],
        y=scored["score_gate_set"],
        mode="lines+markers",
        name="gate set",
        line={"color": charts.PALETTE[1], "dash": "dash"},
        text=hover,
        hovertemplate="%{text}<br>gate set %{y:.4f}<extra></extra>",
    )
    for outcome, rows in scored.groupby("outcome"):
        figure.add_scatter(
            x=rows["id"],
            y=rows["score_oof"],
            mode="markers",
            name=f"OOF, {outcome}",
            marker={"size": 10, "color": charts.OUTCOME_MARKERS.get(outcome, "gray")},
            text=[f"run {i}, {outcome}" for i in rows["id"]],
            hovertemplate="%{text}<br>OOF %{y:.4f}<extra></extra>",
        )
    champion = scored[scored["id"] == champion_id]
    if not champion.empty:
        figure.add_scatter(
            x=champion["id"],
            y=champion["score_oof"],
            mode="markers",
            marker={"symbol": "star", "size": 18, "color": "#803df5"},
            name=f"champion (run {champion_id})",
            hovertemplate="champion: run %{x}<extra></extra>",
        )
    figure.update_xaxes(tickprefix="run ", dtick=1 if len(scored) <= 20 else None)
    figure.update_yaxes(**charts.SCORE_AXIS)
    return charts.styled(figure, f"{name} of every successful run", "", name, height=380)


def run_name(run_id: int | None) -> str:
    return "none" if run_id is None else f"run {run_id}"


def decisions_table(decisions: list[dict]) -> pd.DataFrame:
    recent = decisions[::-1][:RECENT_DECISIONS]
    return pd.DataFrame(
        {
            "decided": [present.moment(d["decided_at"]) for d in recent],
            "kind": [d["kind"] for d in recent],
            "run": pd.array([d["candidate_run_id"] for d in recent], dtype="Int64"),  # none for a rollback
            "champion": [
                f"{run_name(d['champion_before'])} → {run_name(d['champion_after'])}"
                if d["champion_before"] != d["champion_after"]
                else f"{run_name(d['champion_after'])} (kept)"
                for d in recent
            ],
            "why": [d["reason"] for d in recent],
        }
    )


def prequential_figure(scores: pd.DataFrame) -> go.Figure:
    """The champion's score on each pull's new samples, before training on them, over time; the
    champion's own out-of-fold score is the reference it is held to."""
    name = metrics.metric_name(scores["metric"].iloc[-1], scores["beta"].iloc[-1])
    hover = [
        f"pull {r.pull_id}: champion run {r.champion_run_id} on {r.n_samples} new samples"
        for r in scores.itertuples()
    ]
    figure = go.Figure()
    figure.add_scatter(
        x=scores["created_at"],
        y=scores["champion_score_oof"],
        mode="lines+markers",
        line_shape="hv",
        name="the champion's OOF (reference)",
        line={"color": charts.PALETTE[0], "dash": "dash"},
        text=[f"champion run {c}" for c in scores["champion_run_id"]],
        hovertemplate="%{text}: OOF %{y:.4f}<extra></extra>",
    )
    figure.add_scatter(
        x=scores["created_at"],
        y=scores["score"],
        mode="lines+markers",
        name="on the pull's new samples",
        line={"color": charts.PALETTE[1]},
        marker={"size": 10},
        text=hover,
        hovertemplate="%{text}<br>%{y:.4f}<extra></extra>",
    )
    figure.update_xaxes(**charts.TIME_AXIS)
    figure.update_yaxes(**charts.SCORE_AXIS)
    return charts.styled(figure, f"Prequential {name} of each pull", "scored at (UTC)", name, height=340)


def prequential_section(url: str) -> None:
    st.subheader("Prequential score: the champion on new data")
    st.caption(
        "Before a run trains on a pull's new labeled samples, the champion predicts them with its own "
        "thresholds: how the deployed model does on data it never saw, and a drift signal."
    )
    scores = data.prequential_scores(url)
    if scores.empty:
        st.caption(
            "No prequential score yet: one is recorded when a pull adds labeled samples and a champion "
            "exists."
        )
        return
    st.plotly_chart(prequential_figure(scores), key="prequential_over_time", config=charts.CONFIG)
    latest = scores.iloc[-1]
    st.caption(
        f"Latest: pull {latest['pull_id']}, champion run {latest['champion_run_id']} scored "
        f"{present.score(latest['score'])} on {latest['n_samples']} new samples (its OOF "
        f"{present.score(latest['champion_score_oof'])})"
    )
    classes = pd.DataFrame(latest["classes"]).set_index("label")
    fbeta = f"F{latest['beta']:g}"
    bars = classes[["precision", "recall", "fbeta"]].rename(columns={"fbeta": fbeta})
    shift = pd.DataFrame(latest["label_shift"]).T.rename(
        columns={"new": "new samples", "before": "rest of the data set"}
    )
    left, right = st.columns(2)
    left.plotly_chart(
        charts.grouped_bars(bars, f"Per class on pull {latest['pull_id']}'s new samples", "score"),
        key="prequential_classes",
        config=charts.CONFIG,
    )
    right.plotly_chart(
        charts.grouped_bars(
            shift[["new samples", "rest of the data set"]],
            f"Label shift of pull {latest['pull_id']}",
            "share of samples",
            first_color=3,
        ),
        key="label_shift",
        config=charts.CONFIG,
    )
    table = classes.rename(columns={"fbeta": fbeta, "known": "known to the champion"})
    st.dataframe(
        table[["support", "precision", "recall", fbeta, "f1", "known to the champion"]],
        key="prequential_table",
        column_config={
            c: st.column_config.NumberColumn(format="%.4f") for c in ("precision", "recall", fbeta, "f1")
        },
    )


def render(url: str) -> None:
    st.title("Overview")
    runs = data.runs(url)
    decisions = data.decisions(url)
    champion_id = data.champion(url)
    left, middle, right = st.columns(3)
    with left:
        champion_card(runs, decisions, champion_id)
    last = runs.iloc[-1]
    with middle:
        st.metric(f"Last run: run {last['id']}", last["outcome"])
        st.markdown(
            f"{badges(last['outcome'], last['champion'])} started {present.moment(last['started_at'])}"
        )
        if last["reason"]:
            st.caption(last["reason"])
        if last["decision"]:
            st.caption(f"gate: {last['decision']}")
    with right:
        st.metric("Runs", len(runs))
        st.caption(" · ".join(f"{n} {outcome}" for outcome, n in runs["outcome"].value_counts().items()))

    for run_id in data.running_runs(url):
        st.subheader(f"Running now: run {run_id}")
        live_run(url, run_id)

    if runs["score_oof"].notna().any():
        st.plotly_chart(scores_figure(runs, champion_id), key="fbeta_over_time", config=charts.CONFIG)
    prequential_section(url)
    if decisions:
        st.subheader("Champion decisions")
        st.caption(
            "The gate's verdicts, promotions and rollbacks, newest first: why the champion is the champion."
        )
        st.dataframe(
            decisions_table(decisions), hide_index=True, key="decisions", placeholder=present.MISSING
        )
    pulls = data.data_pulls(url)
    if not pulls.empty:
        figure = go.Figure(
            go.Scatter(
                x=pulls["started_at"],
                y=pulls["dataset_size"],
                mode="lines+markers",
                text=[f"pull {p}" for p in pulls["pull"]],
                hovertemplate="%{text}: %{y} samples<extra>%{x}</extra>",
            )
        )
        figure.update_xaxes(**charts.TIME_AXIS)
        st.plotly_chart(
            charts.styled(
                figure, "Data set size at each pull", "pulled at (UTC)", "active samples", height=300
            ),
            key="size_over_time",
            config=charts.CONFIG,
        )
