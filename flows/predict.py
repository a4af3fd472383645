"""The `predict` flow: images -> the champion's (or a run's) ensemble -> submission CSV and probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from foldwise import secrets
from foldwise.config import FoldwiseConfig
from foldwise.flows import task
from foldwise.tasks import ensemble, predict

resolve_model = task(ensemble.resolve_model, name="resolve-model")
predict_images = task(predict.predict_images, name="predict-images")
write_predictions = task(predict.write_predictions, name="write-predictions")


@dataclass(frozen=True)
class PredictSummary:
    """What a prediction wrote, and the images it could not read."""

    run_id: int
    n_predicted: int
    failures: list[tuple[str, str]]
    labels_path: str
    probabilities_path: str


@flow(name="predict", description="Predict labels of images with the champion ensemble (or a run's).")
def predict_flow(
    config: FoldwiseConfig, images: list[str], out: str, model: str = "champion", tta: bool = False
) -> PredictSummary:
    """Predict `images` with `model` (the champion, or a run's id): labels to `out`, probabilities beside it."""
    secrets.install_log_masking()
    chosen = resolve_model(config, model)
    predictions = predict_images(config, [Path(image) for image in images], chosen, tta)
    labels_path, probabilities_path = write_predictions(config, chosen, predictions, Path(out))
    return PredictSummary(
        chosen.run_id,
        len(predictions.ids),
        [(str(path), reason) for path, reason in predictions.failures],
        str(labels_path),
        str(probabilities_path),
    )
