"""Top-k accuracy on the device."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is in the top-k, for each k, as a float tensor (no host sync)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hit = top == target[:, None]
    return torch.stack([hit[:, : min(k, k_max)].any(1).sum() for k in ks]).float()
