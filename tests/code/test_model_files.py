"""Weights are read as plain tensors only; warm starts map the output layer by label."""

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from foldwise.tasks.ensemble import UnsafeWeights, load_weights, warm_state


class RunsCode:
    """Unpickling this runs a shell command: what a malicious weights file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["fold0.pt", "fold0.pth", "fold0.safetensors"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"weight": RunsCode(marker)}))
    with pytest.raises(UnsafeWeights, match="refused .*not a file of plain tensors"):
        load_weights(path)
    assert not marker.exists()


def test_plain_tensor_files_load(tmp_path):
    state = {"0.weight": torch.randn(3, 2), "0.bias": torch.zeros(3)}
    save_file(state, str(tmp_path / "fold0.safetensors"))
    torch.save(state, tmp_path / "fold0.pt")
    for name in ("fold0.safetensors", "fold0.pt"):
        loaded = load_weights(tmp_path / name)
        assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_pickled_object_that_is_not_tensors_is_refused(tmp_path):
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(UnsafeWeights, match="mapping of names to tensors"):
        load_weights(tmp_path / "odd.pt")


def test_warm_state_keeps_body_and_maps_output_rows_by_label():
    source = {
        "body.weight": torch.full((4, 4), 7.0),
        "head.weight": torch.tensor([[1.0], [2.0], [3.0]]),
        "head.bias": torch.tensor([10.0, 20.0, 30.0]),
    }
    target = {
        "body.weight": torch.zeros(4, 4),
        "head.weight": torch.tensor([[-1.0], [-1.0], [-1.0]]),
        "head.bias": torch.tensor([-1.0, -1.0, -1.0]),
    }
    merged = warm_state(target, source, source_vocab=["a", "b", "gone"], target_vocab=["b", "new", "a"])
    assert torch.equal(merged["body.weight"], source["body.weight"])
    assert merged["head.weight"].flatten().tolist() == [2.0, -1.0, 1.0]  # b, new (fresh), a
    assert merged["head.bias"].tolist() == [20.0, -1.0, 10.0]


def test_warm_state_leaves_layers_of_another_shape_fresh():
    source = {"body.weight": torch.ones(2, 2), "head.weight": torch.ones(1, 2)}
    target = {"body.weight": torch.zeros(3, 3), "head.weight": torch.zeros(1, 2)}
    assert torch.equal(warm_state(target, source, ["a"], ["a"])["body.weight"], torch.zeros(3, 3))
