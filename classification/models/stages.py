"""The stage layout the CIFAR networks share: a depth of ``per_block * n + fixed`` layers, and three
(or more) stages of ``n`` blocks whose first block subsamples by 2 (except in the first stage)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn


def blocks_per_stage(depth: int, per_block: int, fixed: int, stages: int = 3) -> int:
    """``n`` for a network of ``depth = stages * per_block * n + fixed`` layers."""
    unit = stages * per_block
    if (depth - fixed) % unit:
        raise ValueError(f"depth must be {unit}n + {fixed}, got {depth}")
    return (depth - fixed) // unit


def stride_of(stage: int, block: int) -> int:
    return 2 if stage > 0 and block == 0 else 1


def make_stages(make_block: Callable[[int, int, int], nn.Module], widths, n: int | Sequence[int],
                in_planes: int) -> tuple[list[nn.Sequential], int]:
    """``n`` blocks ``make_block(in_planes, planes, stride)`` per width (``n[i]`` for the i-th, given one per
    stage); returns the stages and the output width."""
    stages = []
    for i, planes in enumerate(widths):
        blocks = []
        for j in range(n if isinstance(n, int) else n[i]):
            blocks.append(make_block(in_planes, planes, stride_of(i, j)))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return stages, in_planes


def he_fan_out_init(model: nn.Module, zero_linear_bias: bool = False) -> None:
    """The references' initialisation: every conv ``N(0, sqrt(2 / (k * k * out_channels)))`` (He, fan_out),
    BatchNorm weight 1 / bias 0, and optionally the classifier's bias 0 (the Linear weight keeps
    PyTorch's default)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and zero_linear_bias:
            nn.init.zeros_(m.bias)
