"""The random step: choose one box per image (and nothing else). Application is in :mod:`core.ops`.

- :func:`selective_boxes` - KeepAugment's selective-cut (``mode="below"``) and selective-paste
  (``mode="above"``): score every candidate region, threshold at the per-image tau-quantile, draw
  uniformly among the qualifying ones.
- :func:`random_boxes` - the plain (non-selective) ops: a uniform anchor, with the same placement
  rules, so a baseline arm differs from its Keep arm only in the selection.
"""

from __future__ import annotations

import torch

from .draws import uniform
from .regions import anchor_boxes, boxes_at, check_placement, region_scores
from .sampling import candidate_mask, select_anchors
from .sizes import as_sizes, check_sizes_fit, parse_size


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
    anchor = select_anchors(candidate_mask(scores, tau, mode, candidate_count(size, *scores.shape[1:], placement)),
                            generator)
    return anchor_boxes(anchor, size, saliency.shape[1], saliency.shape[2], placement)


def candidate_count(size, height: int, width: int, placement: str) -> int | None:
    """How many anchors of an image are candidates, when the same for every image (one static size)."""
    size = parse_size(size)
    if isinstance(size, torch.Tensor):
        return None
    if placement == "clip":
        return height * width
    return (height - size[0] + 1) * (width - size[1] + 1)


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
    check_placement(placement)
    size = parse_size(size)
    u = uniform((batch, 2), generator, device, torch.float64)
    if placement == "clip":
        iy, ix = (u[:, 0] * height).long(), (u[:, 1] * width).long()
    elif isinstance(size, torch.Tensor):
        sizes = as_sizes(size, batch, torch.device(device))
        iy = (u[:, 0] * (height - sizes[:, 0] + 1).clamp_min(1)).long()
        ix = (u[:, 1] * (width - sizes[:, 1] + 1).clamp_min(1)).long()
    else:
        iy, ix = (u[:, 0] * (height - size[0] + 1)).long(), (u[:, 1] * (width - size[1] + 1)).long()
    return boxes_at(iy.clamp_max(height - 1), ix.clamp_max(width - 1), size, height, width, placement)
