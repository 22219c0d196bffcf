"""BoT losses (reid-strong-baseline ``layers/``): label-smoothed cross-entropy on the post-BN logits,
batch-hard triplet on the pre-BN feature, center loss on the pre-BN feature."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def smooth_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """CE against ``(1 - eps) * onehot + eps / K`` (BoT ``CrossEntropyLabelSmooth``)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    k = logits.shape[1]
    soft = torch.full_like(log_p, epsilon / k).scatter_(1, target[:, None], 1 - epsilon + epsilon / k)
    return -(soft * log_p).sum(1).mean()


def euclidean_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise euclidean distances, sqrt clamped at 1e-12 as BoT."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None] - 2 * a @ b.T
    return d.clamp_min(1e-12).sqrt()


def batch_hard_triplet(features: torch.Tensor, target: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """For each anchor: hardest positive (largest distance) and hardest negative (smallest);
    ``mean(max(0, d_ap - d_an + margin))`` (MarginRankingLoss), features not normalised."""
    dist = euclidean_dist(features.float(), features.float())
    same = target[:, None] == target[None, :]
    d_ap = dist.masked_fill(~same, float("-inf")).amax(1)
    d_an = dist.masked_fill(same, float("inf")).amin(1)
    return F.relu(d_ap - d_an + margin).mean()


class CenterLoss(nn.Module):
    """``mean_i ||f_i - c_{y_i}||^2`` (BoT ``CenterLoss``: squared distance, clamped, averaged over the
    batch). The centres are parameters with their own optimiser (SGD, lr 0.5 in BoT)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = features.float() - self.centers[target]
        return (diff * diff).sum(1).clamp(1e-12, 1e12).mean()
