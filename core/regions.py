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

from ._checks import check_batch, check_finite, check_maps

PLACEMENTS = ("clip", "inside")


def as_sizes(size, batch: int, device: torch.device) -> torch.Tensor:
    """Normalise a region size to a ``(B, 2)`` int64 tensor of ``(h, w)``.

    Args:
        size: an int (square), an ``(h, w)`` pair, or a ``(B, 2)`` integer tensor of per-image sizes.
    """
    if isinstance(size, torch.Tensor):
        if size.dim() != 2 or size.shape[1] != 2 or size.is_floating_point():
            raise ValueError(f"size must be an integer tensor of shape (B, 2), got {size.dtype} {tuple(size.shape)}")
        check_batch(size.shape[0], batch, "size")
        return size.to(device=device, dtype=torch.long)
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or not all(isinstance(v, int) for v in size):
        raise ValueError(f"size must be an int, an (h, w) pair of ints or a (B, 2) tensor, got {size!r}")
    if min(size) < 0:
        raise ValueError(f"size must be non-negative, got {size!r}")
    out = torch.empty(batch, 2, device=device, dtype=torch.long)  # filled by kernels: no host-to-device copy
    out[:, 0], out[:, 1] = size[0], size[1]
    return out


def check_sizes_fit(size, height: int, width: int) -> None:
    """Static sizes larger than the image are an error (per-image tensors are drawn to fit)."""
    if isinstance(size, int):
        size = (size, size)
    if not isinstance(size, torch.Tensor) and (size[0] > height or size[1] > width):
        raise ValueError(f"size {tuple(size)} is larger than the image ({height}, {width})")


def summed_area_table(saliency: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` -> ``(B, H + 1, W + 1)`` float64 integral image with a zero first row/column."""
    sat = saliency.to(torch.float64).cumsum(1).cumsum(2)
    return torch.nn.functional.pad(sat, (1, 0, 1, 0))


def anchor_extents(sizes: torch.Tensor, height: int, width: int, placement: str):
    """Clipped box extents for every anchor row and column.

    Returns ``(y1, y2, x1, x2, valid_y, valid_x)`` with shapes ``(B, H)``, ``(B, H)``, ``(B, W)``,
    ``(B, W)``, ``(B, H)``, ``(B, W)``.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    dev = sizes.device
    rows = torch.arange(height, device=dev)[None, :]
    cols = torch.arange(width, device=dev)[None, :]
    h, w = sizes[:, :1], sizes[:, 1:]
    if placement == "clip":
        top, left = rows - h // 2, cols - w // 2
    else:
        top, left = rows.expand(sizes.shape[0], -1), cols.expand(sizes.shape[0], -1)
    y1, y2 = top.clamp(0, height), (top + h).clamp(0, height)
    x1, x2 = left.clamp(0, width), (left + w).clamp(0, width)
    valid_y = (top + h <= height) if placement == "inside" else torch.ones_like(y1, dtype=torch.bool)
    valid_x = (left + w <= width) if placement == "inside" else torch.ones_like(x1, dtype=torch.bool)
    return y1, y2, x1, x2, valid_y, valid_x


def region_scores(saliency: torch.Tensor, size, placement: str = "clip", check: bool = True) -> torch.Tensor:
    """Sum of saliency inside the candidate box of every anchor.

    Args:
        saliency: ``(B, H, W)`` non-negative importance map.
        size: region ``(h, w)``: an int, a pair, or a ``(B, 2)`` tensor of per-image sizes.
        placement: ``"clip"`` or ``"inside"`` (see the module docstring).
        check: raise if the saliency has non-finite values.

    Returns:
        ``(B, H, W)`` float64 scores; NaN marks anchors that are not candidates (``"inside"`` only).
    """
    check_maps(saliency)
    b, height, width = saliency.shape
    check_sizes_fit(size, height, width)
    sizes = as_sizes(size, b, saliency.device)  # validates size
    sat = summed_area_table(saliency)
    if check:  # the float64 total of each map is finite iff every value is
        check_finite(sat[:, -1, -1], "saliency")
    if not isinstance(size, torch.Tensor):
        return _static_scores(sat, *((size, size) if isinstance(size, int) else size), placement)
    y1, y2, x1, x2, valid_y, valid_x = anchor_extents(sizes, height, width, placement)
    cols = width + 1  # separable differences: rows first, then columns
    rows = sat.gather(1, y2[:, :, None].expand(-1, -1, cols)) - sat.gather(1, y1[:, :, None].expand(-1, -1, cols))
    x2, x1 = x2[:, None, :].expand(-1, height, -1), x1[:, None, :].expand(-1, height, -1)
    scores = rows.gather(2, x2) - rows.gather(2, x1)
    if placement == "inside":
        valid = valid_y[:, :, None] & valid_x[:, None, :]
        scores = scores.masked_fill(~valid, float("nan"))
    return scores


def _static_scores(sat: torch.Tensor, h: int, w: int, placement: str) -> torch.Tensor:
    """One region size for the whole batch: box sums as differences of shifted views of the table."""
    b, height, width = sat.shape[0], sat.shape[1] - 1, sat.shape[2] - 1
    if placement == "clip":  # replicate padding implements the clipping of the box at the borders
        p = torch.nn.functional.pad(sat[:, None], (w // 2, w - w // 2, h // 2, h - h // 2), mode="replicate")[:, 0]
        return (p[:, h:h + height, w:w + width] - p[:, :height, w:w + width]
                - p[:, h:h + height, :width] + p[:, :height, :width])
    if placement != "inside":
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    rows, cols = min(height - h + 1, height), min(width - w + 1, width)
    inner = (sat[:, h:h + rows, w:w + cols] - sat[:, :rows, w:w + cols]
             - sat[:, h:h + rows, :cols] + sat[:, :rows, :cols])
    scores = sat.new_full((b, height, width), float("nan"))
    scores[:, :rows, :cols] = inner
    return scores


def anchor_boxes(anchor: torch.Tensor, size, height: int, width: int, placement: str = "clip") -> torch.Tensor:
    """Boxes ``(B, 4)`` = ``(x1, y1, x2, y2)`` of the chosen flat anchor index per image."""
    sizes = as_sizes(size, anchor.shape[0], anchor.device)
    y1, y2, x1, x2, _, _ = anchor_extents(sizes, height, width, placement)
    iy, ix = (anchor // width)[:, None], (anchor % width)[:, None]
    return torch.cat([x1.gather(1, ix), y1.gather(1, iy), x2.gather(1, ix), y2.gather(1, iy)], dim=1)
