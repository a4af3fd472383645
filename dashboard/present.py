"""What the pages say about runs, in words: outcomes, progress, provenance and config, numbers formatted.
Pure functions of what the database holds; no Streamlit here."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from foldwise.stages import trained_stages

MISSING = "–"
# The colour of each run outcome's badge (Streamlit's names); foldwise.db.registry.run_outcome decides it.
OUTCOME_COLORS = {
    "running": "blue",
    "promoted": "green",
    "rejected": "orange",
    "gate-failed": "red",
    "not gated": "gray",
    "skipped": "gray",
    "failed": "red",
    "crashed": "red",
}
CHAMPION = "champion"
CHAMPION_COLOR = "violet"


def latest_decisions(decisions: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The last decision about each candidate run (rollbacks name no candidate)."""
    return {d["candidate_run_id"]: d for d in decisions if d["candidate_run_id"] is not None}


def champion_decision(decisions: list[dict[str, Any]], champion: int | None) -> dict[str, Any] | None:
    """The decision that made the champion what it is now: its promotion, or the rollback back to it."""
    for decision in reversed(decisions):
        if decision["champion_after"] == champion and decision["champion_before"] != champion:
            return decision
    return None


def score(value: float | None) -> str:
    return MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return MISSING
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def moment(when: datetime | None) -> str:
    """A stored time (UTC, to the minute)."""
    return MISSING if when is None or when != when else f"{when:%Y-%m-%d %H:%M} UTC"


def value_text(value: Any) -> str:
    """A config or provenance value as a person reads it: no JSON nulls, lists of stages on one line."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={value_text(v)}" for k, v in value.items() if v is not None) or "{}"
    if isinstance(value, list):
        parts = [f"({value_text(item)})" if isinstance(item, dict) else value_text(item) for item in value]
        return ", ".join(parts) or "none"
    return str(value)


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`section.key` -> readable value, for every leaf of a stored config."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= flat_config(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value_text(value)
    return flat


def config_differences(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Only the keys whose values differ between the configs: key -> {config name -> value}."""
    flats = {name: flat_config(config) for name, config in configs.items()}
    keys = sorted(set().union(*flats.values()))
    rows = {key: {name: flat.get(key, "absent") for name, flat in flats.items()} for key in keys}
    return {key: row for key, row in rows.items() if len(set(row.values())) > 1}


def prefect_ui_url() -> str | None:
    """The Prefect UI's address: PREFECT_UI_URL, else PREFECT_API_URL without its `/api`."""
    if ui := os.environ.get("PREFECT_UI_URL"):
        return ui.rstrip("/")
    if api := os.environ.get("PREFECT_API_URL"):
        return api.rstrip("/").removesuffix("/api")
    return None


def flow_run_link(flow_run_id: str | None) -> str | None:
    base = prefect_ui_url()
    return f"{base}/runs/flow-run/{flow_run_id}" if base and flow_run_id else None


@dataclass(frozen=True)
class Progress:
    """How far a running run is: folds finished (trained or reused), and the fold, stage and epoch now."""

    n_folds: int
    stages: list[dict[str, Any]]
    done: dict[int, int | None]  # finished fold -> the run it was reused from (None: trained here)
    fold: int | None  # the fold training now; None: not training (before the folds or after them)
    stage: int  # 0-based, of the fold training now
    epochs_done: int  # in that stage

    @property
    def epochs_per_fold(self) -> int:
        return sum(int(s["epochs"]) for s in self.stages)

    @property
    def fraction(self) -> float:
        """Epochs finished over all epochs of the run, a finished fold counting whole."""
        total = self.n_folds * self.epochs_per_fold
        if total == 0:
            return 0.0
        current = 0
        if self.fold is not None:
            current = sum(int(s["epochs"]) for s in self.stages[: self.stage]) + self.epochs_done
        return min(1.0, (len(self.done) * self.epochs_per_fold + current) / total)

    def describe(self) -> str:
        reused = [
            f"fold {f} reused from run {source}" for f, source in self.done.items() if source is not None
        ]
        finished = f"{len(self.done)} of {self.n_folds} folds done" + (
            f" ({'; '.join(reused)})" if reused else ""
        )
        if self.fold is None:
            if len(self.done) >= self.n_folds:
                return f"{finished}; scoring, thresholds and the champion gate"
            return f"{finished}; pulling data and building folds, or in the first epoch"
        stage = self.stages[self.stage] if self.stage < len(self.stages) else {"size": "?", "epochs": "?"}
        return (
            f"{finished}; training fold {self.fold}: stage {self.stage + 1} of {len(self.stages)} "
            f"({stage['size']} px), epoch {self.epochs_done} of {stage['epochs']} done"
        )


def progress(
    config: dict[str, Any],
    warm_started: bool,
    epochs: list[dict[str, Any]],
    finished_folds: list[dict[str, Any]],
) -> Progress:
    """A running run's progress from its `epochs` rows and finished folds. Folds train in order; the one
    training now is the last with epoch rows and no result yet."""
    done = {f["fold"]: f["reused_from_run_id"] for f in finished_folds}
    training = [e for e in epochs if e["fold"] not in done]
    train = config.get("train", {})
    stages = trained_stages(train.get("stages") or [], train.get("warm_start_stages"), warm_started)
    n_folds = int(config.get("folds", {}).get("n_folds", len(done)))
    if not training:
        # Between folds the next one has begun but finished no epoch yet.
        waiting = [fold for fold in range(n_folds) if fold not in done]
        fold = waiting[0] if done and waiting else None
        return Progress(n_folds, stages, done, fold, 0, 0)
    fold = max(e["fold"] for e in training)
    last = max((e for e in training if e["fold"] == fold), key=lambda e: (e["stage"], e["epoch"]))
    return Progress(n_folds, stages, done, fold, last["stage"], last["epoch"] + 1)
