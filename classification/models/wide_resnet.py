"""Wide ResNet for CIFAR (Zagoruyko & Komodakis, BMVC 2016): pre-activation BasicBlocks, widths
16·k / 32·k / 64·k, (depth − 4) / 6 blocks per stage, dropout between the convolutions. WRN-28-10:
36.5 M parameters; WRN-28-2 (UDA's semi-supervised network): 1.47 M. BatchNorm momentum is PyTorch's
0.1 (the unofficial KeepAugment code's 0.9 is the TF convention misread)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stages import blocks_per_stage, he_fan_out_init, make_stages


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        projection = stride != 1 or in_planes != planes
        self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False) if projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(o)))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        n = blocks_per_stage(depth, per_block=2, fixed=4)
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        stages, in_planes = make_stages(lambda i, p, s: WideBlock(i, p, s, dropout), widths, n, in_planes=16)
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        he_fan_out_init(self, zero_linear_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(F.relu(self.bn(x)).mean((2, 3)))


def wrn_28_10(num_classes: int = 10, dropout: float = 0.0) -> WideResNet:
    return WideResNet(28, 10, num_classes, dropout)


def wrn_28_2(num_classes: int = 10, dropout: float = 0.0) -> WideResNet:
    return WideResNet(28, 2, num_classes, dropout)
