"""Deterministic application of chosen boxes: masks, Cutout, Random Erasing, CutMix, paste-back.

The random step (:mod:`core.policy`) returns boxes; these functions apply them. All take
``(B, C, H, W)`` images of any dtype (float, bf16/fp16, uint8) and ``(B, 4)`` int64 boxes
``(x1, y1, x2, y2)`` with exclusive ends; an empty box (``x1 == x2``) leaves the image unchanged.
Masks are built from broadcast ``arange`` comparisons (as airbench's ``batch_cutout``), no loops.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import torch

from ._checks import check_batch, check_images
from .draws import integers, normal


def _box_mask(x: torch.Tensor, boxes: torch.Tensor, name: str = "x") -> torch.Tensor:
    """The :func:`boxes_to_mask` of ``boxes`` for the images ``x``, once both are checked."""
    check_images(x, name)
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a (B, 4) tensor, got {getattr(boxes, 'shape', boxes)!r}")
    check_batch(boxes.shape[0], x.shape[0], "boxes")
    return boxes_to_mask(boxes, x.shape[2], x.shape[3])


def boxes_to_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, 4)`` boxes -> ``(B, 1, H, W)`` bool mask, True inside the box (five kernels: one comparison of
    every coordinate with one ``arange``, then rows and columns)."""
    coords = torch.arange(max(height, width), device=boxes.device)
    past = coords >= boxes[:, :, None]  # (B, 4, L): at or past x1, y1, x2, y2
    rows = past[:, 1, :height] > past[:, 3, :height]  # y1 <= y < y2
    cols = past[:, 0, :width] > past[:, 2, :width]  # x1 <= x < x2
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def box_area_fraction(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B,)`` float32 fraction of the image covered by each (clipped) box."""
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    return area.float() / float(height * width)


def fill_tensor(fill, x: torch.Tensor) -> torch.Tensor:
    """A scalar or per-channel fill as a ``(1, C or 1, 1, 1)`` tensor of ``x``'s dtype and device.

    Python values are written with fill kernels, one per value (never a host-to-device copy of a
    Python list, which blocks on CUDA); a tensor fill is converted only if its dtype or device differ,
    so a fill built once (see :class:`core.keep.KeepAugment`) is reused as is.
    """
    if isinstance(fill, torch.Tensor):
        values = fill.to(device=x.device).flatten()
        if values.dtype != x.dtype:
            values = values.float().to(x.dtype)
    else:
        values = _fill_values(fill, x.device).to(x.dtype)
    if values.numel() not in (1, x.shape[1]):
        raise ValueError(f"fill must be a scalar or have one value per channel ({x.shape[1]}), got {values.numel()}")
    return values.view(1, -1, 1, 1)


def _fill_values(fill, device: torch.device) -> torch.Tensor:
    """``(N,)`` float32 from a number or a sequence of numbers, by one ``fill_`` per value."""
    if isinstance(fill, numbers.Real):
        seq = [fill]
    elif isinstance(fill, Iterable) and not isinstance(fill, (str, bytes)):
        seq = list(fill)
    else:
        seq = []
    if not seq or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in seq):
        raise ValueError(f"fill must be a number or a sequence of numbers (one per channel), got {fill!r}")
    values = torch.empty(len(seq), device=device)
    for i, v in enumerate(seq):
        values[i:i + 1].fill_(float(v))
    return values


def cutout(x: torch.Tensor, boxes: torch.Tensor, fill: float | Sequence[float] | torch.Tensor = 0.0) -> torch.Tensor:
    """Fill each box with a constant (Cutout: 0 in normalised space = the mean colour)."""
    return torch.where(_box_mask(x, boxes), fill_tensor(fill, x), x)


def erase(
    x: torch.Tensor, boxes: torch.Tensor, fill: str | float | Sequence[float] | torch.Tensor = "random",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random Erasing's fill inside each box.

    Args:
        fill: ``"random"`` (per-pixel: standard normal for float images, i.e. normalised space;
            uniform 0..255 for uint8), ``"channel_random"`` (one random value per image and channel),
            ``"mean"`` (each image's own per-channel mean), or a scalar / per-channel constant.
    """
    mask = _box_mask(x, boxes)
    if not isinstance(fill, str):
        values = fill_tensor(fill, x)
    elif fill in ("random", "channel_random"):
        shape = x.shape if fill == "random" else (*x.shape[:2], 1, 1)
        if x.dtype == torch.uint8:
            values = integers(0, 256, shape, generator, x.device, torch.uint8)
        else:
            values = normal(shape, generator, x.device).to(x.dtype)
    elif fill == "mean":
        values = x.float().mean(dim=(2, 3), keepdim=True)
        values = values.round().to(x.dtype) if x.dtype == torch.uint8 else values.to(x.dtype)
    else:
        raise ValueError(f"fill must be 'random', 'channel_random', 'mean' or a number, got {fill!r}")
    return torch.where(mask, values, x)


def cutmix(x: torch.Tensor, boxes: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each image's box with the pixels of its partner ``x[perm]`` at the same place.

    Returns:
        ``(mixed, lam)`` with ``lam`` ``(B,)`` float32 = the exact fraction of the image's own pixels
        left after clipping (the weight of its own label; 1 for an empty box).
    """
    mask = _box_mask(x, boxes)
    if perm.dim() != 1:
        raise ValueError(f"perm must be a 1-D permutation, got shape {tuple(perm.shape)}")
    check_batch(perm.shape[0], x.shape[0], "perm")
    lam = 1.0 - box_area_fraction(boxes, x.shape[2], x.shape[3])
    return torch.where(mask, x[perm], x), lam


def paste(x_aug: torch.Tensor, x_clean: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Selective-paste: ``M(S) * x_clean + (1 - M(S)) * x_aug`` (paper Sec. 3)."""
    mask = _box_mask(x_aug, boxes, "x_aug")
    if x_aug.shape != x_clean.shape:
        raise ValueError(f"x_aug and x_clean must have the same shape, got {tuple(x_aug.shape)} and "
                         f"{tuple(x_clean.shape)}")
    return torch.where(mask, x_clean, x_aug)


def mix_targets(
    target: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor, num_classes: int | None = None,
) -> torch.Tensor:
    """Soft targets ``lam * y + (1 - lam) * y[perm]`` as ``(B, K)`` float32.

    Args:
        target: ``(B,)`` class indices (needs ``num_classes``) or ``(B, K)`` soft targets.
    """
    if target.dim() == 1:
        if num_classes is None:
            raise ValueError("num_classes is required to mix integer targets")
        target = torch.nn.functional.one_hot(target.long(), num_classes).float()
    elif target.dim() != 2:
        raise ValueError(f"target must be (B,) indices or (B, K) soft targets, got shape {tuple(target.shape)}")
    target = target.float()
    lam = lam.to(target.dtype)[:, None]
    return lam * target + (1.0 - lam) * target[perm]
