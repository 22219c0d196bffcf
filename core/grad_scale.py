"""Loss scaling for float16 saliency passes (the saliency counterpart of ``torch.amp.GradScaler``).

A float16 backward flushes gradients below ~6e-8 to zero: the input gradient of a freshly initialised
MobileNetV3 or EfficientNet is ~1e-11 to 1e-15, so a float16 pass returns an all-zero map and the selective
op would silently draw uniform boxes. The objective is multiplied by a power of two before the backward and
the map divided by it after (exact: powers of two only move the exponent). The gradient at the logits is the
scale itself, so it stays below float16's maximum (65504): at most 2**15.

A :class:`SaliencyScaler` keeps a running scale on the batch's device and updates it in place after each
pass without a host read, as ``GradScaler`` does: halved when an image's gradient overflowed (that image's
map is then all zero), doubled after ``growth_interval`` passes without overflow or at once when a map
underflowed to all zero, clamped to [2**-14, 2**15]. Maps that stay all zero (a network whose input gradient
is below float16's range even at 2**15, e.g. EfficientNet-B0 at init) are counted by
:class:`core.keep.KeepOutput`'s ``zero_saliency``; bfloat16 has float32's range.
"""

from __future__ import annotations

import torch

INIT_SCALE = 2.0**12  # finite and unchanged ranking on the families of tests/core/test_architectures.py at init
MAX_SCALE, MIN_SCALE = 2.0**15, 2.0**-14


def pass_dtype(device: torch.device, autocast_dtype: torch.dtype | None, param_dtype: torch.dtype) -> torch.dtype:
    """The dtype a saliency pass computes in: the requested autocast dtype, else the caller's autocast dtype,
    else the model's parameter dtype."""
    if autocast_dtype is not None:
        return autocast_dtype
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return param_dtype


class SaliencyScaler:
    """Running loss scale of float16 saliency passes on one device (0-d tensors, updated in place)."""

    def __init__(self, device: torch.device | str = "cpu", init_scale: float = INIT_SCALE,
                 growth_interval: int = 50) -> None:
        self.scale = torch.full((), init_scale, dtype=torch.float32, device=device)
        self.tracker = torch.zeros((), dtype=torch.int32, device=device)  # passes since the last overflow / growth
        self.growth_interval = growth_interval

    def update(self, sal: torch.Tensor, overflowed: torch.Tensor) -> None:
        """After a pass: ``sal`` the unscaled ``(B, H, W)`` maps, ``overflowed`` ``(B,)`` from :func:`unscale`."""
        overflow = overflowed.any()
        self.tracker.add_(1).masked_fill_(overflow, 0)
        grow = ~overflow & (((sal.flatten(1).amax(1) == 0).any()) | (self.tracker >= self.growth_interval))
        self.tracker.masked_fill_(grow, 0)
        factor = torch.where(overflow, 0.5, torch.where(grow, 2.0, 1.0))
        self.scale.mul_(factor).clamp_(MIN_SCALE, MAX_SCALE)

    def __repr__(self) -> str:
        return f"SaliencyScaler(device={self.scale.device}, growth_interval={self.growth_interval})"


def unscale(grad_map: torch.Tensor, scale: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(map / scale, overflowed)`` for a ``(B, H, W)`` map of the scaled objective: the images whose map is
    not finite come back as all-zero maps, ``overflowed`` ``(B,)`` bool marks them."""
    overflowed = ~torch.isfinite(grad_map).flatten(1).all(1)
    unscaled = grad_map / scale
    return torch.where(overflowed[:, None, None], torch.zeros((), device=grad_map.device), unscaled), overflowed
