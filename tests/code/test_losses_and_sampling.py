import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foldwise.tasks.batches import rarity_weights
from foldwise.tasks.losses import MultiLabelLoss


def test_bce_is_torchs_and_smoothing_pulls_targets_to_a_half():
    logits, targets = torch.randn(8, 5), (torch.rand(8, 5) < 0.3).float()
    assert MultiLabelLoss("bce")(logits, targets) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, targets))
    )
    smoothed = MultiLabelLoss("bce", label_smoothing=0.1)(logits, targets)
    assert smoothed == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, targets * 0.9 + 0.05)))


def test_focal_and_asymmetric_losses_forget_easy_negatives_but_not_missed_positives():
    targets = torch.tensor([[1.0, 0.0]])
    easy = torch.tensor([[4.0, -4.0]])  # confident and right
    missed = torch.tensor([[-4.0, -4.0]])  # the positive missed
    bce = MultiLabelLoss("bce")
    assert MultiLabelLoss("focal")(easy, targets) < 0.01 * bce(easy, targets)  # focal: all easy terms fade
    assert MultiLabelLoss("asymmetric")(easy, targets) < 0.6 * bce(easy, targets)  # asymmetric: easy negatives
    for kind in ("focal", "asymmetric"):
        loss = MultiLabelLoss(kind)
        assert loss(missed, targets) > 0.9 * bce(missed, targets) > 10 * loss(easy, targets)
    # The asymmetric loss gives a negative under 5 % probability no cost at all.
    assert float(MultiLabelLoss("asymmetric")(torch.tensor([[-4.0]]), torch.tensor([[0.0]]))) == 0.0
    assert torch.equal(MultiLabelLoss("focal").activation(easy), torch.sigmoid(easy))


def test_rare_labels_are_drawn_more_often():
    targets = np.zeros((100, 3), dtype=np.float32)
    targets[:, 0] = 1  # everywhere
    targets[:4, 1] = 1  # on 4 % of the samples
    weights = rarity_weights(targets)
    assert weights[0] > 4 * weights[50] and np.allclose(weights[4:], weights[50])
