"""The random step: choose one box per image (and nothing else). Application is in :mod:`core.ops`.

- :func:`selective_boxes` - KeepAugment's selective-cut (``mode="below"``) and selective-paste
  (``mode="above"``): score every candidate region, threshold at the per-image tau-quantile, draw
  uniformly among the qualifying ones.
- :func:`random_boxes` - the plain (non-selective) ops: a uniform anchor, with the same placement
  rules, so a baseline arm differs from its Keep arm only in the selection.
"""

from __future__ import annotations

import torch

from .regions import anchor_boxes, region_scores
from .sampling import candidate_mask, select_anchors
from .sizes import as_sizes, check_sizes_fit


def selective_boxes(
    saliency: torch.Tensor,
    size,
    tau: float = 0.6,
    mode: str = "below",
    placement: str = "clip",
    generator: torch.Generator | None = None,
    score: str = "sum",
) -> torch.Tensor:
    """Boxes ``(B, 4)`` drawn uniformly among regions scoring below (cut) / above (paste) the
    tau-quantile of the image's candidate scores.

    Args:
        saliency: ``(B, H, W)`` non-negative saliency.
        size: region ``(h, w)``: int, pair, or ``(B, 2)`` per-image tensor.
        tau: quantile in [0, 1] (0.6 in every experiment of the paper).
        mode: ``"below"`` (selective-cut), ``"above"`` (selective-paste) or ``"any"``.
        placement: ``"clip"`` (Cutout/CutMix) or ``"inside"`` (Random Erasing).
        score: ``"sum"`` of saliency in the box (the paper's Eq. 1) or its ``"mean"`` over the clipped
            box (see :func:`core.regions.region_scores`).
    """
    scores = region_scores(saliency, size, placement, reduce=score)
    anchor = select_anchors(candidate_mask(scores, tau, mode), generator)
    return anchor_boxes(anchor, size, saliency.shape[1], saliency.shape[2], placement)


def random_boxes(
    batch: int,
    height: int,
    width: int,
    size,
    placement: str = "clip",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Uniform boxes ``(B, 4)``: a uniform centre (``"clip"``) or a uniform fitting top-left corner
    (``"inside"``)."""
    check_sizes_fit(size, height, width)
    sizes = as_sizes(size, batch, torch.device(device))
    u = torch.rand((batch, 2), generator=generator, device=device, dtype=torch.float64)
    if placement == "clip":
        iy, ix = (u[:, 0] * height).long(), (u[:, 1] * width).long()
    elif placement == "inside":
        iy = (u[:, 0] * (height - sizes[:, 0] + 1).clamp_min(1)).long()
        ix = (u[:, 1] * (width - sizes[:, 1] + 1).clamp_min(1)).long()
    else:
        raise ValueError(f"placement must be 'clip' or 'inside', got {placement!r}")
    anchor = iy.clamp_max(height - 1) * width + ix.clamp_max(width - 1)
    return anchor_boxes(anchor, sizes, height, width, placement)
