"""Region scores for every candidate box of every image, in one batched pass.

KeepAugment (Gong et al., CVPR 2021, Eq. 1) scores a region ``S`` by the sum of saliency inside it.
We score *all* candidate regions at once with a summed-area table, so the cost is independent of
the region size and sizes may differ per image (Random Erasing and CutMix draw one per image).

Candidate regions are indexed by an *anchor* pixel ``(i, j)`` of the ``H x W`` grid:

- ``placement="clip"`` (Cutout, CutMix): the anchor is the centre, anywhere in the image; the box is
  rows ``[i - h // 2, i - h // 2 + h)`` (so exactly ``h`` rows before clipping; for even ``h`` this is
  the Cutout reference's ``i ± h/2``) and likewise for columns, clipped to the image.
- ``placement="inside"`` (Random Erasing, Zhong et al. 2020): the anchor is the top-left corner and
  only boxes that fit entirely inside the image are candidates; the others get score NaN.

Boxes are ``(x1, y1, x2, y2)`` int64 with exclusive ``x2, y2`` (torchvision / Detectron2 order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_maps, check_values, host_readable
from .sizes import as_sizes, check_sizes_fit, parse_size

PLACEMENTS = ("clip", "inside")
REDUCTIONS = ("sum", "mean")


def summed_area_table(saliency: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` -> ``(B, H + 1, W + 1)`` integral image with a zero first row/column: float64 for a
    floating-point map, int64 (exact counts) for an integer or bool map."""
    dtype = torch.float64 if saliency.is_floating_point() else torch.int64
    sat = saliency.to(dtype).cumsum(1).cumsum(2)
    return F.pad(sat, (1, 0, 1, 0))


def anchor_extents(sizes: torch.Tensor, height: int, width: int, placement: str):
    """Clipped box extents ``(y1, y2, x1, x2)`` for every anchor row and column, with shapes ``(B, H)``,
    ``(B, H)``, ``(B, W)``, ``(B, W)``, for ``(B, 2)`` sizes."""
    check_placement(placement)
    rows = torch.arange(height, device=sizes.device)[None, :]
    cols = torch.arange(width, device=sizes.device)[None, :]
    h, w = sizes[:, :1], sizes[:, 1:]
    if placement == "clip":
        top, left = rows - h // 2, cols - w // 2
    else:
        top, left = rows.expand(sizes.shape[0], -1), cols.expand(sizes.shape[0], -1)
    return top.clamp(0, height), (top + h).clamp(0, height), left.clamp(0, width), (left + w).clamp(0, width)


def region_scores(saliency: torch.Tensor, size, placement: str = "clip", check: bool = True,
                  reduce: str = "sum") -> torch.Tensor:
    """Sum (the paper's Eq. 1) or mean of saliency inside the candidate box of every anchor.

    ``reduce="mean"`` divides each sum by the box's area after clipping to the image: with ``"clip"``
    placement a box cut by the border holds fewer pixels, so the sum favours border boxes for a
    selective cut (they score low because they are small); the mean compares boxes per pixel. A box
    of area 0 scores 0.

    What is exact: no score is negative and a box holding no nonzero pixel scores exactly 0, so empty and all-zero
    boxes tie exactly whatever the dynamic range of the rest of the map (plain float64 table differences leave
    them at +-1e-5 next to values of 1e10). With one size for the batch the boxes are summed directly in float64
    (two separable pooling passes: boxes with the same pixels tie exactly, and a sum of non-negative numbers is 0
    only when they all are); on the CPU, where pooling costs the box side per anchor, by separable differences of
    float64 prefix sums at the clipped window ends instead (the same window takes the same two sums, so the same
    ties; a box with a nonzero pixel whose sum rounds away next to a huge prefix scores the smallest positive
    float64, by an int64 count of the nonzero pixels; the same values as pooling whenever float64 sums the map
    exactly, e.g. float32 values within a 2**29 range); per-image sizes take differences of a float64 summed-area
    table, with an int64 table of ``saliency != 0`` for the exact zeros, exact up to the table's rounding (an
    absolute error of order 1e-16 of the map's total).

    Args:
        saliency: ``(B, H, W)`` non-negative, finite importance map (B, H, W > 0).
        size: region ``(h, w)``: an int, a pair, or a ``(B, 2)`` tensor of per-image sizes, each in
            ``[0, (H, W)]`` (checked, see :func:`core.sizes.check_sizes_fit`).
        placement: ``"clip"`` or ``"inside"`` (see the module docstring).
        check: check that the saliency is finite and non-negative (:func:`check_saliency_values`: no sync).
        reduce: ``"sum"`` (default, the paper) or ``"mean"`` (area-normalised).

    Returns:
        ``(B, H, W)`` float64 scores >= 0; NaN marks anchors that are not candidates (``"inside"`` only).
    """
    check_maps(saliency)
    check_placement(placement)
    check_choice(reduce, REDUCTIONS, "reduce")
    height, width = saliency.shape[1:]
    size = parse_size(size)
    check_sizes_fit(size, height, width)
    if check:
        check_saliency_values(saliency)
    if not isinstance(size, torch.Tensor) and min(size) > 0:
        static = _prefix_scores if saliency.device.type == "cpu" else _pooled_scores
        return static(saliency, *size, placement, reduce)
    sums = _box_sums(summed_area_table(saliency), size, placement)
    nonzero = _box_sums(summed_area_table(saliency != 0), size, placement)
    scores = torch.where(nonzero > 0, sums.clamp_min(0.0), 0.0)
    if reduce == "mean":
        scores = scores / box_areas(size, saliency.shape[0], height, width, placement, saliency.device).clamp_min(1)
    if placement == "inside":
        scores = scores.masked_fill(~_fits_inside(size, height, width, saliency.device), float("nan"))
    return scores


def check_saliency_values(saliency: torch.Tensor) -> None:
    """A saliency map must be finite and non-negative: ``ValueError`` naming which on the CPU, one
    asynchronous device assert elsewhere (three small kernels, no synchronisation)."""
    ok = saliency.nan_to_num(-1.0, -1.0, -1.0).amin() >= 0  # NaN, +-Inf and negative values all fail
    if not host_readable(ok):
        torch._assert_async(ok, "saliency must be finite and non-negative (it holds NaN, Inf or a negative value)")
    elif not bool(ok):
        check_values(torch.isfinite(saliency), "saliency contains non-finite values (NaN or Inf)")
        raise ValueError("saliency must be non-negative")


def _pooled_scores(saliency: torch.Tensor, h: int, w: int, placement: str, reduce: str) -> torch.Tensor:
    """One size ``(h, w)`` (both > 0) for the batch: every anchor's box summed (or averaged over its
    clipped area) in float64 by a rows pass and a columns pass of zero-padded pooling."""
    height, width = saliency.shape[1:]
    s = saliency.to(torch.float64)[:, None]
    if placement == "clip":  # zero padding is the clipping; the window of output i covers [i - h // 2, i - h // 2 + h)
        opts = dict(count_include_pad=False) if reduce == "mean" else dict(divisor_override=1)
        s = F.avg_pool2d(s, (h, 1), stride=1, padding=(h // 2, 0), **opts)
        s = F.avg_pool2d(s, (1, w), stride=1, padding=(0, w // 2), **opts)
        return s[:, 0, :height, :width].contiguous()  # an even side gives one extra row / column
    opts = dict(divisor_override=1) if reduce == "sum" else {}
    s = F.avg_pool2d(F.avg_pool2d(s, (h, 1), stride=1, **opts), (1, w), stride=1, **opts)
    return F.pad(s[:, 0], (0, w - 1, 0, h - 1), value=float("nan"))  # anchors whose box does not fit


def _prefix_scores(saliency: torch.Tensor, h: int, w: int, placement: str, reduce: str) -> torch.Tensor:
    """:func:`_pooled_scores` on the CPU, in O(H W) whatever the box size: separable differences of float64
    prefix sums at each anchor's clipped window ends (see :func:`region_scores` for what is exact)."""
    height, width = saliency.shape[1:]
    size = torch.tensor([[h, w]], device=saliency.device)
    r0, r1, c0, c1 = (e[0] for e in anchor_extents(size, height, width, placement))

    def box_sums(t: torch.Tensor) -> torch.Tensor:
        rows = F.pad(t.cumsum(1), (0, 0, 1, 0))  # a zero first row: window [a, b) = rows[b] - rows[a]
        t = rows[:, r1] - rows[:, r0]
        cols = F.pad(t.cumsum(2), (1, 0))
        return cols[:, :, c1] - cols[:, :, c0]

    sums = box_sums(saliency.to(torch.float64))
    nonzero = box_sums((saliency != 0).to(torch.int64)) > 0
    scores = torch.where(nonzero, sums.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    if reduce == "mean":
        scores = scores / ((r1 - r0)[:, None] * (c1 - c0)[None, :]).clamp_min(1)
    if placement == "inside":
        scores = scores.masked_fill(~_fits_inside((h, w), height, width, saliency.device), float("nan"))
    return scores


def box_areas(size, batch: int, height: int, width: int, placement: str, device) -> torch.Tensor:
    """``(B, H, W)`` float64 area of every anchor's box after clipping to the image."""
    y1, y2, x1, x2 = anchor_extents(as_sizes(size, batch, torch.device(device)), height, width, placement)
    return ((y2 - y1)[:, :, None] * (x2 - x1)[:, None, :]).to(torch.float64)


def check_placement(placement: str) -> None:
    check_choice(placement, PLACEMENTS, "placement")


def _box_sums(sat: torch.Tensor, size: tuple[int, int] | torch.Tensor, placement: str) -> torch.Tensor:
    """``(B, H, W)`` box sums of the table's dtype for every anchor (any value where an ``"inside"``
    box does not fit), by separable differences: rows first, then columns."""
    height, width = sat.shape[1] - 1, sat.shape[2] - 1
    y1, y2, x1, x2 = anchor_extents(as_sizes(size, sat.shape[0], sat.device), height, width, placement)
    cols = width + 1
    rows = sat.gather(1, y2[:, :, None].expand(-1, -1, cols)) - sat.gather(1, y1[:, :, None].expand(-1, -1, cols))
    x2, x1 = x2[:, None, :].expand(-1, height, -1), x1[:, None, :].expand(-1, height, -1)
    return rows.gather(2, x2) - rows.gather(2, x1)


def _fits_inside(size: tuple[int, int] | torch.Tensor, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Anchors whose box, with the anchor as top-left corner, fits in the image: ``(H, W)`` for a static
    size, ``(B, H, W)`` for per-image sizes."""
    if isinstance(size, torch.Tensor):
        size = size.to(device)
        h, w = size[:, :1], size[:, 1:]
    else:
        h, w = size
    rows = torch.arange(height, device=device) + h <= height
    cols = torch.arange(width, device=device) + w <= width
    return rows[..., :, None] & cols[..., None, :]


def anchor_boxes(anchor: torch.Tensor, size, height: int, width: int, placement: str = "clip") -> torch.Tensor:
    """Boxes ``(B, 4)`` = ``(x1, y1, x2, y2)`` of the chosen flat anchor index per image."""
    return boxes_at(anchor // width, anchor % width, size, height, width, placement)


def boxes_at(iy: torch.Tensor, ix: torch.Tensor, size, height: int, width: int,
             placement: str = "clip") -> torch.Tensor:
    """Boxes ``(B, 4)`` of the anchors at rows ``iy`` and columns ``ix`` ``(B,)``, clipped to the image."""
    check_placement(placement)
    size = parse_size(size)
    if isinstance(size, torch.Tensor):
        y1, y2, x1, x2 = anchor_extents(as_sizes(size, iy.shape[0], iy.device), height, width, placement)
        iy, ix = iy[:, None], ix[:, None]
        return torch.cat([x1.gather(1, ix), y1.gather(1, iy), x2.gather(1, ix), y2.gather(1, iy)], dim=1)
    h, w = size  # one size: a few kernels on (B,) tensors
    top, left = (iy - h // 2, ix - w // 2) if placement == "clip" else (iy, ix)
    if height == width:
        return torch.stack([left, top, left + w, top + h], dim=1).clamp(0, height)
    return torch.stack([left.clamp(0, width), top.clamp(0, height), (left + w).clamp(0, width),
                        (top + h).clamp(0, height)], dim=1)
