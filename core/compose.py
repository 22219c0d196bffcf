"""``KeepPipeline``: the keep steps of one batch in the order of the recipes the paper follows.

After the image-level policy (AutoAugment / RandAugment, per image in the data pipeline), an optional
selective **paste** of the clean image's important region into the augmented view, then an optional
**region op** (Cutout, Random Erasing, CutMix; selective or plain) on the result, Cutout last as in the
AutoAugment CIFAR code. When both steps are selective the saliency of the clean batch is computed once
and used by both (the paste takes the regions above the threshold, the cut avoids them)::

    paste = KeepAugment("paste", 16)
    cut = KeepAugment("cutout", 16)                 # selective: never cuts what the paste brought back
    keep = KeepPipeline(paste, cut)
    out = keep(model, x_clean, y, x_aug=x_autoaugmented, generator=g)
"""

from __future__ import annotations

import torch
from torch import nn

from .keep import KeepAugment, KeepOutput


class KeepPipeline:
    """Selective paste, then a region op, for one batch (either may be None; not both)."""

    def __init__(self, paste: KeepAugment | None, region: KeepAugment | None) -> None:
        if paste is None and region is None:
            raise ValueError("KeepPipeline needs a paste step, a region step or both")
        if paste is not None and (paste.op != "paste" or not paste.selective):
            raise ValueError(f"the paste step must be a selective KeepAugment('paste'), got {paste!r}")
        if region is not None and region.op == "paste":
            raise ValueError("the region step must be cutout, erasing or cutmix, not paste")
        self.paste, self.region = paste, region

    def __call__(self, model: nn.Module | None, x: torch.Tensor, y: torch.Tensor | None = None,
                 x_aug: torch.Tensor | None = None, generator: torch.Generator | None = None) -> KeepOutput:
        """``x``: the clean batch; ``x_aug``: its image-level augmentation (same crop/flip), or None when
        there is no image policy. Returns the region step's output (boxes, CutMix targets) with the
        paste's boxes in ``paste_boxes``."""
        paste_boxes, shared, current = None, None, x if x_aug is None else x_aug
        if self.paste is not None:  # the saliency of the clean batch, used by both steps
            params = self.paste.sample(model, x, y, generator)
            pasted = self.paste.apply(params, x, y, x_aug, generator)
            paste_boxes, current, shared = pasted.boxes, pasted.x, params.saliency
        if self.region is None:
            return KeepOutput(current, y, paste_boxes, saliency=shared, paste_boxes=paste_boxes)
        params = self.region.sample(model, current, y, generator, saliency=shared)  # None: of the image to be cut
        out = self.region.apply(params, current, y, None, generator)
        out.paste_boxes = paste_boxes
        return out

    def __repr__(self) -> str:
        return f"KeepPipeline(paste={self.paste!r}, region={self.region!r})"
