"""Shake-Shake (Gastaldi 2017) and ShakeDrop (Yamada et al. 2019) regularisers as autograd functions,
with the CIFAR networks that use them: Shake-Shake-26 2x96d (26.2 M parameters) and PyramidNet-272
(alpha = 200, bottleneck) with ShakeDrop (26.0 M). Randomness is per image ("Shake-Shake-Image"),
drawn from the global torch RNG like dropout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stages import blocks_per_stage, he_fan_out_init, make_stages, stride_of


class _ShakeShake(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        alpha = torch.rand(x1.shape[0], 1, 1, 1, device=x1.device, dtype=x1.dtype)
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        beta = torch.rand(grad.shape[0], 1, 1, 1, device=grad.device, dtype=grad.dtype)
        return beta * grad, (1 - beta) * grad


class _ShakeDrop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p_drop: float) -> torch.Tensor:
        shape = (x.shape[0], 1, 1, 1)
        keep = torch.rand(shape, device=x.device, dtype=x.dtype) >= p_drop
        alpha = torch.rand(shape, device=x.device, dtype=x.dtype) * 2 - 1
        ctx.save_for_backward(keep)
        return torch.where(keep, x, alpha * x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        beta = torch.rand(keep.shape, device=grad.device, dtype=grad.dtype)
        return torch.where(keep, grad, beta * grad), None


def shake_shake(x1: torch.Tensor, x2: torch.Tensor, training: bool) -> torch.Tensor:
    return _ShakeShake.apply(x1, x2) if training else 0.5 * (x1 + x2)


def shake_drop(x: torch.Tensor, p_drop: float, training: bool) -> torch.Tensor:
    return _ShakeDrop.apply(x, p_drop) if training else (1 - p_drop) * x


class ShakeBranch(nn.Sequential):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
                         nn.ReLU(), nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes))


class ShakeSkip(nn.Module):
    """Shortcut for a change of shape: two strided 1x1 paths (the second shifted by one pixel), concatenated."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, planes // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(in_planes, planes - planes // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        a = F.avg_pool2d(x, 1, self.stride)
        b = F.avg_pool2d(F.pad(x, (-1, 1, -1, 1)), 1, self.stride)
        return self.bn(torch.cat([self.conv1(a), self.conv2(b)], dim=1))


class ShakeBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.branch1, self.branch2 = ShakeBranch(in_planes, planes, stride), ShakeBranch(in_planes, planes, stride)
        self.shortcut = ShakeSkip(in_planes, planes, stride) if stride != 1 or in_planes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = shake_shake(self.branch1(x), self.branch2(x), self.training)
        return out + (x if self.shortcut is None else self.shortcut(x))


class ShakeShakeNet(nn.Module):
    def __init__(self, depth: int = 26, width: int = 96, num_classes: int = 10) -> None:
        super().__init__()
        n = blocks_per_stage(depth, per_block=2, fixed=2)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = make_stages(ShakeBlock, (width, 2 * width, 4 * width), n, in_planes=16)
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_planes, num_classes)
        he_fan_out_init(self, zero_linear_bias=True)  # as the Shake-Shake PyTorch port (owruby/shake-shake_pytorch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.bn1(self.conv1(x)))))
        return self.fc(F.relu(x).mean((2, 3)))


class PyramidBottleneck(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, p_drop: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_planes), nn.Conv2d(in_planes, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
            nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4))
        self.stride, self.extra, self.p_drop = stride, planes * 4 - in_planes, p_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = shake_drop(self.body(x), self.p_drop, self.training)
        shortcut = F.avg_pool2d(x, 2, ceil_mode=True) if self.stride > 1 else x
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        return out + shortcut


class PyramidNet(nn.Module):
    """Bottleneck PyramidNet (Han et al., CVPR 2017) with ShakeDrop, death rate linear in depth up to p_last."""

    def __init__(self, depth: int = 272, alpha: int = 200, num_classes: int = 10, p_last: float = 0.5) -> None:
        super().__init__()
        n = blocks_per_stage(depth, per_block=3, fixed=2)  # bottleneck blocks
        total, step, dim = 3 * n, alpha / (3 * n), 16.0
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for i in range(3):
            blocks = []
            for j in range(n):
                dim += step
                planes = int(round(dim))
                blocks.append(PyramidBottleneck(in_planes, planes, stride_of(i, j), p_last * (i * n + j + 1) / total))
                in_planes = planes * 4
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        he_fan_out_init(self)  # as dyhan0920/PyramidNet-PyTorch PyramidNet.py (1e2b467f): convs and BN only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.bn1(self.conv1(x)))))
        return self.fc(F.relu(self.bn(x)).mean((2, 3)))


def shake_shake_26_2x96d(num_classes: int = 10) -> ShakeShakeNet:
    return ShakeShakeNet(26, 96, num_classes)


def pyramidnet272_shakedrop(num_classes: int = 10) -> PyramidNet:
    return PyramidNet(272, 200, num_classes, 0.5)
