"""Region sizes: one static ``(h, w)`` for the batch, or a ``(B, 2)`` integer tensor of per-image sizes.

A static size is an integer (square) or an ``(h, w)`` pair of integers; any ``numbers.Integral``
(numpy integers too) is accepted, bools, floats (even ``16.0``) and strings are not. A static size
larger than the image is an error; per-image tensors are checked by value without synchronising
(see :func:`check_sizes_fit`).
"""

from __future__ import annotations

import numbers

import torch

from ._checks import check_batch, check_int, check_values

_USAGE = "an int, an (h, w) pair of ints or a (B, 2) integer tensor"


def parse_size(size, name: str = "size") -> tuple[int, int] | torch.Tensor:
    """Validate ``size``: returns ``(h, w)`` Python ints, or the ``(B, 2)`` tensor unchanged (shape and
    dtype checked here, values by :func:`check_sizes_fit`)."""
    if isinstance(size, torch.Tensor):
        if size.dim() != 2 or size.shape[1] != 2 or size.dtype == torch.bool or size.is_floating_point() \
                or size.is_complex():
            raise ValueError(f"{name} must be an integer tensor of shape (B, 2), got {size.dtype} {tuple(size.shape)}")
        return size
    if isinstance(size, (str, bytes)):
        raise ValueError(f"{name} must be {_USAGE}, got {size!r}")
    pair = (size, size) if isinstance(size, numbers.Number) else size
    try:
        h, w = pair
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {_USAGE}, got {size!r}") from None
    h, w = check_int(h, name), check_int(w, name)
    if h < 0 or w < 0:
        raise ValueError(f"{name} must be non-negative, got {size!r}")
    return h, w


def check_sizes_fit(size, height: int, width: int, name: str = "size") -> None:
    """Sizes must lie in ``[0, image size]``: a static size raises ``ValueError`` at once, a ``(B, 2)`` tensor
    is checked by value (:func:`core._checks.check_values`: at once on the CPU, else an asynchronous assert)."""
    size = parse_size(size, name)
    if isinstance(size, torch.Tensor):
        ok = (size >= 0) & torch.stack([size[:, 0] <= height, size[:, 1] <= width], dim=1)
        check_values(ok, f"{name} has an (h, w) that is negative or larger than the image ({height}, {width})")
    elif size[0] > height or size[1] > width:
        raise ValueError(f"{name} {size} is larger than the image ({height}, {width})")


def as_sizes(size, batch: int, device: torch.device) -> torch.Tensor:
    """Normalise a region size to a ``(B, 2)`` int64 tensor of ``(h, w)`` on ``device``."""
    size = parse_size(size)
    if isinstance(size, torch.Tensor):
        check_batch(size.shape[0], batch, "size")
        return size.to(device=device, dtype=torch.long)
    out = torch.empty(batch, 2, device=device, dtype=torch.long)
    out[:, 0].fill_(size[0])  # fill kernels: no host-to-device copy of the Python values
    out[:, 1].fill_(size[1])
    return out
