"""The Bag-of-Tricks re-ID network (Luo et al. 2019, reid-strong-baseline ``modeling/baseline.py``):
a torchvision ResNet-50/101 with last stride 1, global average pooling -> f_t (triplet / center
losses), BNNeck (BatchNorm1d, bias frozen) -> f_i, bias-free classifier (CE). Inference returns f_i
(``neck_feat="after"``, BoT's default ``TEST.NECK_FEAT``) or f_t (``"before"``).

One deliberate difference from BoT's ResNet: BoT's ``modeling/backbones/resnet.py`` has no ReLU after
the stem's BatchNorm (``# x = self.relu(x)    # add missed relu`` is commented out, michuanhaohao/
reid-strong-baseline at 3da7e6f0, lines 97 and 125); ours is torchvision's ResNet, which has it. The
ImageNet weights BoT starts from were trained with that ReLU (torchvision's), and so are the
backbones our ``classification`` trainer exports, so we keep the layout the weights were made for.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

DEPTHS = {d: getattr(torchvision.models, f"resnet{d}") for d in (18, 34, 50, 101)}


class BoTNet(nn.Module):
    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, neck_feat: str = "after") -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"model.depth must be one of {sorted(DEPTHS)}, got {depth}")
        if neck_feat not in ("after", "before"):
            raise ValueError(f"model.neck_feat must be 'after' or 'before' (the BNNeck), got {neck_feat!r}")
        self.neck_feat = neck_feat
        self.base = DEPTHS[depth](weights=None)
        self.dim = self.base.fc.in_features  # 2048 (ResNet-50/101) or 512 (18/34)
        self.base.fc = nn.Identity()
        if last_stride == 1:
            block = self.base.layer4[0]
            (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.bottleneck = nn.BatchNorm1d(self.dim)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(self.dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f_t: the pooled backbone feature (before the BNNeck): torchvision's forward, ``fc`` being an identity."""
        return self.base(x)

    def forward(self, x: torch.Tensor):
        """Training: (logits, f_t). Eval: f_i (after the BNNeck) or f_t (``neck_feat="before"``)."""
        f_t = self.features(x)
        if not self.training and self.neck_feat == "before":
            return f_t
        f_i = self.bottleneck(f_t)
        return (self.classifier(f_i), f_t) if self.training else f_i

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bottleneck(self.features(x)))

    def load_backbone(self, path: str | Path) -> dict:
        """ImageNet weights in torchvision naming: a torchvision checkpoint or a backbone exported by
        `classification` (``module.`` / ``state_dict`` wrappers stripped, ``fc`` skipped)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pretrained: backbone weights not found: {path}. It must be ImageNet weights of a ResNet in "
                f"torchvision naming: torchvision's resnet50/101 state dict (e.g. saved from "
                f"torchvision.models.resnet101(weights='IMAGENET1K_V1')), or a backbone exported by "
                f"tools/train_cls.py --export; with internet, model.pretrained= "
                f"model.torchvision_weights=IMAGENET1K_V1 downloads them; model.pretrained= alone trains from scratch")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            result = self.base.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise ValueError(f"{path} does not match a torchvision ResNet: {err}") from err
        if result.unexpected_keys or result.missing_keys:
            raise ValueError(f"{path} does not match a torchvision ResNet: missing {result.missing_keys[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]}")
        return {"loaded": len(state)}


class LogitsView(nn.Module):
    """The identity logits of a BoTNet in any mode: what the saliency pass differentiates."""

    def __init__(self, net: BoTNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.logits(x)
