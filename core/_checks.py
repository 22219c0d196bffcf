"""Argument validation shared by the `core` functions.

Every check raises ``ValueError`` naming the offending argument. Checks look only at shapes,
dtypes and Python scalars, so they never synchronise with the device; checks of tensor *values*
(:func:`check_values`) raise at once on the CPU and are asynchronous device asserts elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers

import torch

_DEFERRED = contextvars.ContextVar("core_deferred_checks", default=False)


@contextlib.contextmanager
def deferred_checks():
    """Inside, no check reads a tensor on the host, on the CPU either: value checks are asynchronous asserts
    and the one-time CPU warnings wait. What capturing a step as a CUDA graph needs (a host read fails the
    capture, and Python code runs only at capture); on an accelerator it changes nothing."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def host_readable(t: torch.Tensor) -> bool:
    """Whether a check may read ``t`` on the host now: on the CPU, outside ``torch.compile`` and outside
    :func:`deferred_checks`."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling() and not _DEFERRED.get()


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
    if 0 in s.shape:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(s.shape)}")


def check_values(ok: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless the bool tensor ``ok`` is all True. On the CPU this is
    immediate; on an accelerator it is an asynchronous device assert (a host-side check would
    synchronise), which fails the next synchronising call."""
    if not host_readable(ok):  # no host read in a compiled or captured graph either
        torch._assert_async(ok.all(), message)
    elif not bool(ok.all()):
        raise ValueError(message)


def check_int(value, name: str) -> int:
    """An integer argument: any ``numbers.Integral`` but bool (so numpy integers too), as an ``int``.
    Floats are rejected even when integral (16.0), so a computed size is never silently truncated."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def check_tau(tau: float, name: str = "tau") -> None:
    """A probability / quantile: any real number but bool (numpy scalars too) in [0, 1]; NaN is rejected."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or math.isnan(tau) or not 0.0 <= tau <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {tau!r}")


def check_choice(value, choices: tuple, name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_batch(n: int, expected: int, name: str) -> None:
    if n != expected:
        raise ValueError(f"{name} has batch size {n}, expected {expected}")


def check_batched(t: torch.Tensor, expected: int, name: str) -> None:
    """``t`` is a tensor with a leading batch dimension of size ``expected``."""
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        shape = "a 0-d tensor" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a torch.Tensor with a batch dimension, got {shape}")
    check_batch(t.shape[0], expected, name)


def check_range(pair: tuple[float, float], name: str, low: float = 0.0, high: float = float("inf")) -> None:
    if len(pair) != 2 or not (low <= pair[0] <= pair[1] <= high):
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {pair!r}")
