"""Argument validation shared by the `core` functions.

Every check raises ``ValueError`` naming the offending argument. Checks look only at shapes,
dtypes and Python scalars, so they never synchronise with the device.
"""

from __future__ import annotations

import torch


def check_images(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")


def check_maps(s: torch.Tensor, name: str = "saliency") -> None:
    if not isinstance(s, torch.Tensor) or s.dim() != 3:
        shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"{name} must have shape (B, H, W), got {shape}")
    if not s.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {s.dtype}")


def check_finite(s: torch.Tensor, name: str = "saliency") -> None:
    """Non-finite values are an error. On the CPU this raises ``ValueError`` at once; on an
    accelerator it is an asynchronous device assert (a host-side check would synchronise)."""
    if s.device.type == "cpu":
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or Inf)")
    else:
        torch._assert_async(torch.isfinite(s).all(), f"{name} contains non-finite values (NaN or Inf)")


def check_tau(tau: float, name: str = "tau") -> None:
    if not isinstance(tau, (int, float)) or not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {tau!r}")


def check_batch(n: int, expected: int, name: str) -> None:
    if n != expected:
        raise ValueError(f"{name} has batch size {n}, expected {expected}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_range(pair: tuple[float, float], name: str, low: float = 0.0, high: float = float("inf")) -> None:
    if len(pair) != 2 or not (low <= pair[0] <= pair[1] <= high):
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {pair!r}")
