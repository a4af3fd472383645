"""Multi-label losses for `train.loss`: binary cross-entropy (the default), and two that weigh rare
positives up against the many easy negatives, where a label is on one image in fifty:

- `focal`: focal loss (Lin et al., 2017), each term scaled by (1 - p_t)^2;
- `asymmetric`: asymmetric loss (Ridnik et al., 2021): positives as in cross-entropy, negatives
  focused with gamma 4 and their probabilities shifted down by 0.05 (easy ones then cost nothing).

All take logits and targets of shape (batch, classes), with optional label smoothing, and give fastai
the sigmoid as their activation, so predictions are probabilities whichever is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiLabelLoss(nn.Module):
    def __init__(self, kind: str = "bce", label_smoothing: float = 0.0):
        super().__init__()
        self.kind, self.label_smoothing = kind, label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(logits, targets)
        probability = torch.sigmoid(logits)
        if self.kind == "focal":
            terms = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            p_true = probability * targets + (1 - probability) * (1 - targets)
            return ((1 - p_true) ** 2 * terms).mean()
        shifted = (probability - 0.05).clamp(min=0)  # asymmetric: easy negatives cost nothing
        positive = targets * torch.log(probability.clamp(min=1e-8))
        negative = (1 - targets) * shifted**4 * torch.log((1 - shifted).clamp(min=1e-8))
        return -(positive + negative).mean()

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def decodes(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities > 0.5
