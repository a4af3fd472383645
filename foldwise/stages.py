"""Which progressive-resizing stages a run trained: one rule for fitting, fold prediction, the ensemble's
image size (prediction, gate, export, model.json) and the dashboard's progress."""

from __future__ import annotations

from typing import TypeVar

Stage = TypeVar("Stage")  # a StageConfig, or a stored config's stage (a dict)


def trained_stages(
    stages: list[Stage], warm_start_stages: list[Stage] | None, warm_started: bool
) -> list[Stage]:
    """A warm-started run trains `train.warm_start_stages` when its config has them; any other run
    `train.stages`."""
    return (warm_started and warm_start_stages) or stages
