"""Fold prediction files: those written before the gate set had its name are read like today's."""

from pathlib import Path

import numpy as np

from foldwise.tasks.fold_records import FoldOutput
from foldwise.tasks.results import gather


def fold_file(path: Path, fold: int, gate_set_keys: tuple[str, str]) -> FoldOutput:
    ids_key, probabilities_key = gate_set_keys
    np.savez(
        path,
        vocab=np.array(["cat", "dog"]),
        oof_ids=np.array([10 + fold]),
        oof=np.array([[0.1 * fold, 0.5]]),
        **{ids_key: np.array([1, 2]), probabilities_key: np.array([[0.2, 0.4], [0.6, 0.8]]) * (fold + 1)},
    )
    return FoldOutput(fold, path.with_suffix(".safetensors"), path, 1, 1, 0.0, None, None)


def test_a_fold_file_from_before_the_rename_is_gathered_like_a_new_one(tmp_path):
    """A run reusing an earlier run's fold mixes files of both ages."""
    new = fold_file(tmp_path / "fold0.npz", 0, ("gate_set_ids", "gate_set"))
    old = fold_file(tmp_path / "fold1.npz", 1, ("holdout_ids", "holdout"))
    ensemble = gather([old, new])
    assert ensemble.gate_set_ids.tolist() == [1, 2]
    np.testing.assert_allclose(ensemble.gate_set, [[0.3, 0.6], [0.9, 1.2]])  # mean of the two folds
    assert ensemble.oof_ids.tolist() == [10, 11] and ensemble.oof_folds.tolist() == [0, 1]
