"""CIFAR ResNet-18 as in the Cutout reference (DeVries & Taylor 2017, uoguelph-mlrg/Cutout
``model/resnet.py``): 3x3 stem without max-pool, BasicBlocks [2, 2, 2, 2] at widths 64-512,
4x4 average pool, linear head. 11.17 M parameters for 10 classes. Module names follow torchvision
(``conv1, bn1, layer1..4``; the head is ``fc``) so the early head hooks ``layer1``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stages import make_stages


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, projection: bool = True) -> None:
        """``projection``: a 1x1 conv + BN shortcut where the shape changes (else the subclass's own)."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if projection and (stride != 1 or in_planes != planes):
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        widths = [width * 2**i for i in range(len(blocks))]
        stages, in_planes = make_stages(BasicBlock, widths, blocks, in_planes=width)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


def cifar_resnet18(num_classes: int = 10, width: int = 64) -> CifarResNet:
    """ResNet-18 of the Cutout repository; ``width`` < 64 gives a narrower network (demo, CPU presets)."""
    return CifarResNet((2, 2, 2, 2), num_classes, width)
