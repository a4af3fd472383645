"""The dashboard's figures, with one look: titles in words, scores on a fixed 0-1 axis, legends at the
bottom and the toolbar on the side (neither covers a title or a tick label, both fit a phone)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

SCORE_AXIS = {"range": [-0.02, 1.02], "tickvals": [0, 0.2, 0.4, 0.6, 0.8, 1.0]}
TIME_AXIS = {"tickformat": "%b %d\n%H:%M", "hoverformat": "%Y-%m-%d %H:%M UTC"}
PALETTE = qualitative.Plotly
# Marker colours of the gate outcomes (Streamlit's badge colours, as plotly colours).
OUTCOME_MARKERS = {
    "promoted": "#21a366",
    "rejected": "#ff8c00",
    "gate-failed": "#e0283b",
    "not gated": "#9aa0a6",
}
CONFIG = {"displaylogo": False}  # st.plotly_chart(..., config=CONFIG)


def styled(figure: go.Figure, title: str, x_title: str, y_title: str, height: int = 340) -> go.Figure:
    figure.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        xaxis_title=x_title,
        yaxis_title=y_title,
        height=height,
        margin={"l": 10, "r": 40, "t": 50, "b": 10},
        # At the figure's bottom edge, below tick labels however long (rotated class names on a phone).
        legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0},
        modebar={"orientation": "v"},
    )
    return figure


def epoch_steps(epochs: pd.DataFrame) -> pd.DataFrame:
    """Epochs numbered 1, 2, ... across the stages of each fold (the x axis of learning curves)."""
    epochs = epochs.sort_values(["fold", "stage", "epoch"]).copy()
    epochs["step"] = epochs.groupby("fold").cumcount() + 1
    return epochs


def epoch_axis(figure: go.Figure, epochs: pd.DataFrame) -> None:
    """Whole epochs, from the first to the last, half an epoch of room each side."""
    figure.update_xaxes(dtick=1, range=[0.5, epochs["step"].max() + 0.5])


def mark_stages(figure: go.Figure, epochs: pd.DataFrame) -> None:
    """A dotted line where each stage begins, named by its image size."""
    first_fold = epochs[epochs["fold"] == epochs["fold"].min()]
    for _, start in first_fold.groupby("stage").head(1).iterrows():
        figure.add_vline(
            x=start["step"] - 0.5,
            line_dash="dot",
            line_color="gray",
            annotation_text=f"{int(start['size'])} px",
            annotation_position="top right",
        )


def loss_curves(epochs: pd.DataFrame) -> go.Figure:
    """Train (solid) and valid (dashed) loss of every fold in one panel."""
    epochs = epoch_steps(epochs)
    figure = go.Figure()
    for index, (fold, rows) in enumerate(epochs.groupby("fold")):
        color = PALETTE[index % len(PALETTE)]
        for column, dash in (("train_loss", "solid"), ("valid_loss", "dash")):
            figure.add_scatter(
                x=rows["step"],
                y=rows[column],
                mode="lines+markers",
                name=f"fold {fold}",
                legendgroup=f"fold {fold}",
                showlegend=column == "train_loss",
                line={"color": color, "dash": dash},
                hovertemplate=f"fold {fold} {column.replace('_', ' ')}: %{{y:.4f}}<extra>epoch %{{x}}</extra>",
            )
    mark_stages(figure, epochs)
    epoch_axis(figure, epochs)
    return styled(figure, "Loss (solid: train, dashed: valid)", "epoch (across stages)", "loss")


def fbeta_curves(epochs: pd.DataFrame, beta: float) -> go.Figure:
    """Validation F-beta of every fold per epoch."""
    epochs = epoch_steps(epochs)
    figure = go.Figure()
    for index, (fold, rows) in enumerate(epochs.groupby("fold")):
        figure.add_scatter(
            x=rows["step"],
            y=rows["fbeta"],
            mode="lines+markers",
            name=f"fold {fold}",
            line={"color": PALETTE[index % len(PALETTE)]},
            hovertemplate=f"fold {fold}: %{{y:.4f}}<extra>epoch %{{x}}</extra>",
        )
    mark_stages(figure, epochs)
    epoch_axis(figure, epochs)
    figure.update_yaxes(**SCORE_AXIS)
    return styled(figure, f"Validation F{beta:g} per epoch", "epoch (across stages)", f"F{beta:g}")


def runs_curves(curves: dict[str, pd.DataFrame], column: str, title: str, y_title: str) -> go.Figure:
    """One line per run: a learning-curve column averaged over the run's folds, epoch by epoch."""
    figure = go.Figure()
    stepped = {name: epoch_steps(epochs) for name, epochs in curves.items()}
    for index, (name, epochs) in enumerate(stepped.items()):
        mean = epochs.groupby("step")[column].mean()
        figure.add_scatter(
            x=mean.index,
            y=mean.values,
            mode="lines+markers",
            name=name,
            line={"color": PALETTE[index % len(PALETTE)]},
            hovertemplate=f"{name}: %{{y:.4f}}<extra>epoch %{{x}}</extra>",
        )
    epoch_axis(figure, pd.concat(stepped.values()))
    if column == "fbeta":
        figure.update_yaxes(**SCORE_AXIS)
    return styled(figure, title, "epoch (across stages)", y_title)


def grouped_bars(
    frame: pd.DataFrame, title: str, y_title: str, kind: str = "score", first_color: int = 0
) -> go.Figure:
    """Bars per class (rows: labels), one colour per column (a split, a run, a fold). `kind`: "score"
    (fixed 0-1 axis), "change" (signed, around a zero line) or "count"."""
    number = {"score": "%{y:.4f}", "change": "%{y:+.4f}", "count": "%{y}"}[kind]
    figure = go.Figure()
    for index, column in enumerate(frame.columns):
        figure.add_bar(
            x=frame.index,
            y=frame[column],
            name=str(column),
            marker_color=PALETTE[(first_color + index) % len(PALETTE)],
            hovertemplate=f"{column} %{{x}}: {number}<extra></extra>",
        )
    figure.update_layout(barmode="group")
    if kind == "score":
        figure.update_yaxes(**SCORE_AXIS)
    if kind == "change":
        figure.add_hline(y=0, line_color="gray")
    return styled(figure, title, "class", y_title, height=360)


def precision_recall(
    precision: np.ndarray, recall: np.ndarray, chosen: tuple[float, float], label: str, ap: float
) -> go.Figure:
    """A class's precision-recall curve, the point of its decision threshold marked."""
    figure = go.Figure(
        go.Scatter(
            x=recall,
            y=precision,
            mode="lines",
            line_shape="hv",
            name="precision-recall",
            hovertemplate="recall %{x:.3f}, precision %{y:.3f}<extra></extra>",
        )
    )
    figure.add_scatter(
        x=[chosen[1]],
        y=[chosen[0]],
        mode="markers",
        marker={"size": 13, "symbol": "x"},
        name="at the threshold",
    )
    figure.update_xaxes(**SCORE_AXIS)
    figure.update_yaxes(**SCORE_AXIS)
    return styled(figure, f"{label}: precision-recall (AP {ap:.3f})", "recall", "precision")


def against_threshold(
    curve: list[float],
    thresholds: np.ndarray,
    precision: np.ndarray,
    recall: np.ndarray,
    chosen: float,
    label: str,
    beta: float,
) -> go.Figure:
    """Precision, recall and F-beta of a class against the decision threshold; the chosen one marked."""
    grid = np.linspace(0, 1, len(curve))
    figure = go.Figure(go.Scatter(x=grid, y=curve, mode="lines", name=f"F{beta:g}", line={"width": 3}))
    for name, values in (("precision", precision), ("recall", recall)):
        figure.add_scatter(x=thresholds, y=values, mode="lines", line_shape="hv", name=name)
    figure.add_vline(x=chosen, line_dash="dot", annotation_text=f"chosen {chosen:.2f}")
    figure.update_xaxes(range=[0, 1])
    figure.update_yaxes(**SCORE_AXIS)
    return styled(figure, f"{label}: against the threshold", "threshold", "score")
