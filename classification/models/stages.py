"""The stage layout the CIFAR networks share: a depth of ``per_block * n + fixed`` layers, and three
(or more) stages of ``n`` blocks whose first block subsamples by 2 (except in the first stage)."""

from __future__ import annotations

from typing import Callable

from torch import nn


def blocks_per_stage(depth: int, per_block: int, fixed: int, stages: int = 3) -> int:
    """``n`` for a network of ``depth = stages * per_block * n + fixed`` layers."""
    unit = stages * per_block
    if (depth - fixed) % unit:
        raise ValueError(f"depth must be {unit}n + {fixed}, got {depth}")
    return (depth - fixed) // unit


def stride_of(stage: int, block: int) -> int:
    return 2 if stage > 0 and block == 0 else 1


def make_stages(make_block: Callable[[int, int, int], nn.Module], widths, n: int,
                in_planes: int) -> tuple[list[nn.Sequential], int]:
    """``n`` blocks ``make_block(in_planes, planes, stride)`` per width; returns the stages and the
    output width."""
    stages = []
    for i, planes in enumerate(widths):
        blocks = []
        for j in range(n):
            blocks.append(make_block(in_planes, planes, stride_of(i, j)))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return stages, in_planes
