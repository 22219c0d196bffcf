"""Low-resolution saliency (KeepAugment Sec. 3.1), value by value: the gradient map of a bicubic-downscaled
copy, mapped back to full resolution by bilinear interpolation (half-pixel centres, ``align_corners=False``).
The upsampling is checked against a separable interpolation written out here, the downscaling against
``F.interpolate(mode="bicubic")``, and the map through ``KeepAugment(low_res=True)`` too."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import KeepAugment, saliency_map


def small_net(num_classes=5):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def gradient_map(model, x, y):
    """``max_c |d logit_y / d x|`` by ``.backward()`` on an eval-mode copy (independent of core.saliency)."""
    m = copy.deepcopy(model).eval()
    xr = x.detach().clone().requires_grad_(True)
    m(xr)[torch.arange(len(x)), y].sum().backward()
    return xr.grad.abs().amax(1)


def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of 1-D linear interpolation with half-pixel centres (source coordinate
    ``(i + 0.5) * n_in / n_out - 0.5``, clamped at 0, neighbours clamped at the last pixel)."""
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = src - i0
        weights[i, i0] += 1 - t
        weights[i, i1] += t
    return weights


def upsample_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` -> ``(B, H, W)`` by the separable weights above (float64)."""
    wy = torch.from_numpy(bilinear_weights(maps.shape[1], size[0]))
    wx = torch.from_numpy(bilinear_weights(maps.shape[2], size[1]))
    return torch.einsum("yi,bij,xj->byx", wy, maps.double(), wx)


@pytest.mark.parametrize("factor,hw", [(0.5, (16, 12)), (0.75, (16, 12)), (0.5, (15, 9)), (0.25, (20, 24))])
def test_low_res_map_is_the_bilinear_upsampled_gradient_of_the_bicubic_copy(factor, hw):
    model = small_net()
    height, width = hw
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 3, height, width, generator=g), torch.tensor([0, 4, 2])
    sal = saliency_map(model, x, y, low_res_factor=factor)
    low = (max(1, round(height * factor)), max(1, round(width * factor)))
    small = F.interpolate(x, size=low, mode="bicubic", align_corners=False)
    expected = upsample_bilinear(gradient_map(model, small, y), (height, width))
    assert sal.shape == (3, height, width) and sal.dtype == torch.float32 and (sal >= 0).all()
    scale = expected.abs().max()
    assert torch.allclose(sal.double(), expected, rtol=0, atol=1e-5 * scale)


def test_keep_low_res_uses_the_low_res_map():
    model = small_net()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3])
    out = KeepAugment("cutout", 4, low_res=True, low_res_factor=0.5)(model, x, y, generator=g)
    small = F.interpolate(x, size=(8, 8), mode="bicubic", align_corners=False)
    expected = upsample_bilinear(gradient_map(model, small, y), (16, 16))
    assert torch.allclose(out.saliency.double(), expected, rtol=0, atol=1e-5 * expected.abs().max())
    full = KeepAugment("cutout", 4)(model, x, y, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(full.saliency, out.saliency, atol=1e-3 * expected.abs().max().item())


def test_reference_upsampling_is_bilinear():
    """The reference itself: a 2x upsampling of [a, b] is [a, .75a + .25b, .25a + .75b, b]."""
    w = bilinear_weights(2, 4)
    assert np.allclose(w, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert np.allclose(bilinear_weights(5, 5), np.eye(5))
