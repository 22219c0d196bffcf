"""ResNet-110 for CIFAR (He et al., CVPR 2016, Sec. 4.2): 3 stages of 18 BasicBlocks at widths
16/32/64, identity shortcuts with zero-padded channels and stride-2 subsampling (option A), global
average pool, linear head. 1.73 M parameters (the paper's "1.7M")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cifar_resnet import BasicBlock
from .stages import blocks_per_stage, he_fan_out_init, make_stages


class PadBlock(BasicBlock):
    """BasicBlock with a parameter-free shortcut: subsample, then zero-pad the new channels."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__(in_planes, planes, stride, projection=False)
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(out + shortcut)


class CifarResNetA(nn.Module):
    def __init__(self, depth: int = 110, num_classes: int = 10) -> None:
        super().__init__()
        n = blocks_per_stage(depth, per_block=2, fixed=2)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, _ = make_stages(PadBlock, (16, 32, 64), n, in_planes=16)
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        he_fan_out_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


def cifar_resnet110(num_classes: int = 10) -> CifarResNetA:
    return CifarResNetA(110, num_classes)
