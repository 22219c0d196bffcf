"""Straightforward per-image references, used as oracles by the tests and as the baseline of
``tools/bench_core.py``. They are deliberately simple (Python loops, ``.item()``), never fast.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F


def reference_region_scores(saliency: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Cutout-placement scores ``(H, W)`` of one ``(H, W)`` map by zero padding + sum pooling
    (independent of the summed-area table in :mod:`core.regions`)."""
    padded = F.pad(saliency[None, None].double(), (w // 2, w - w // 2 - 1, h // 2, h - h // 2 - 1))
    return F.avg_pool2d(padded, (h, w), stride=1)[0, 0] * (h * w)


def reference_box(cy: int, cx: int, h: int, w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Clipped Cutout box ``(x1, y1, x2, y2)`` centred at ``(cy, cx)``."""
    y1, x1 = cy - h // 2, cx - w // 2
    return max(x1, 0), max(y1, 0), min(x1 + w, width), min(y1 + h, height)


def reference_selective_box(
    saliency: torch.Tensor, h: int, w: int, tau: float = 0.6, mode: str = "below",
    generator: torch.Generator | None = None, max_tries: int = 1_000_000,
) -> tuple[int, int, int, int]:
    """The paper's rejection sampling for one image ``(H, W)``: draw a uniform centre until the region
    scores below (cut) / above (paste) the tau-quantile of all candidate scores, with ties at the
    threshold accepted only when no score is strictly on the required side (as :mod:`core.sampling`)."""
    height, width = saliency.shape
    scores = reference_region_scores(saliency, h, w)
    thr = torch.quantile(scores.flatten(), tau).item()
    strictly, tied = (operator.lt, operator.le) if mode == "below" else (operator.gt, operator.ge)
    accept = strictly if bool(strictly(scores, thr).any()) else tied
    for _ in range(max_tries):
        cy = int(torch.randint(height, (1,), generator=generator).item())
        cx = int(torch.randint(width, (1,), generator=generator).item())
        x1, y1, x2, y2 = reference_box(cy, cx, h, w, height, width)
        if accept(saliency[y1:y2, x1:x2].double().sum().item(), thr):
            return x1, y1, x2, y2
    raise RuntimeError("rejection sampling did not terminate")


def reference_keep_cut(x: torch.Tensor, saliency: torch.Tensor, size: int, tau: float = 0.6,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image KeepCutout, as a careful user would write it: score, reject, cut, one image at a time."""
    out = x.clone()
    for i in range(x.shape[0]):
        x1, y1, x2, y2 = reference_selective_box(saliency[i], size, size, tau, "below", generator)
        out[i, :, y1:y2, x1:x2] = 0
    return out


def reference_keep_paste(x_aug: torch.Tensor, x: torch.Tensor, saliency: torch.Tensor, size: int,
                         tau: float = 0.6, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image selective-paste reference."""
    out = x_aug.clone()
    for i in range(x.shape[0]):
        x1, y1, x2, y2 = reference_selective_box(saliency[i], size, size, tau, "above", generator)
        out[i, :, y1:y2, x1:x2] = x[i, :, y1:y2, x1:x2]
    return out


def brute_force_scores(saliency: torch.Tensor, h: int, w: int, placement: str = "clip") -> torch.Tensor:
    """Scores ``(H, W)`` of one map by summing every candidate box explicitly (NaN = not a candidate)."""
    height, width = saliency.shape
    out = torch.full((height, width), float("nan"), dtype=torch.float64)
    for i in range(height):
        for j in range(width):
            if placement == "clip":
                x1, y1, x2, y2 = reference_box(i, j, h, w, height, width)
            elif i + h <= height and j + w <= width:
                x1, y1, x2, y2 = j, i, j + w, i + h
            else:
                continue
            out[i, j] = saliency[y1:y2, x1:x2].double().sum()
    return out
