"""Augmentation methods: one config key each (``aug.method``), built from `core` and torchvision.

Cut-based methods (Cutout, Random Erasing, CutMix and their Keep versions) run on the device per
batch through :class:`core.KeepAugment`. Image-level methods (AutoAugment, RandAugment) run in the data
pipeline on PIL images; their Keep versions need the clean image too, so the pipeline yields the
pair (same crop and flip) and the selective paste happens on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import transforms as T

from core import EarlyHead, KeepAugment

METHODS = (
    "none", "cutout", "keep_cutout", "random_erasing", "keep_random_erasing", "autoaugment", "keep_autoaugment",
    "randaugment", "keep_randaugment", "cutmix", "keep_cutmix", "autoaugment_cutout",
)
_BATCH_OP = {"cutout": "cutout", "random_erasing": "erasing", "cutmix": "cutmix", "autoaugment_cutout": "cutout",
             "autoaugment": "paste", "randaugment": "paste"}
_POLICIES = {"cifar10": T.AutoAugmentPolicy.CIFAR10, "imagenet": T.AutoAugmentPolicy.IMAGENET,
             "svhn": T.AutoAugmentPolicy.SVHN}


@dataclass(frozen=True)
class MethodPlan:
    """What a method needs: an image-level transform in the loader, the pair, a device-side op."""

    image_op: str | None  # "autoaugment" | "randaugment" | None
    pair: bool  # the loader yields (clean, augmented)
    batch_op: str | None  # core op on the device
    selective: bool


def plan(method: str) -> MethodPlan:
    if method not in METHODS:
        raise ValueError(f"aug.method must be one of {', '.join(METHODS)}, got {method!r}")
    keep = method.startswith("keep_")
    base = method.removeprefix("keep_")
    image_op = "autoaugment" if base.startswith("autoaugment") else "randaugment" if base == "randaugment" else None
    paste = keep and base in ("autoaugment", "randaugment")
    batch_op = _BATCH_OP.get(base) if (paste or base not in ("autoaugment", "randaugment")) else None
    return MethodPlan(image_op, paste, batch_op, keep)


def image_transform(aug_cfg) -> T.Compose | None:
    """The PIL-level AutoAugment / RandAugment of ``aug.method`` (None for the other methods)."""
    op = plan(aug_cfg.method).image_op
    if op == "autoaugment":
        if aug_cfg.autoaugment_policy not in _POLICIES:
            raise ValueError(f"aug.autoaugment_policy must be one of {sorted(_POLICIES)}, "
                             f"got {aug_cfg.autoaugment_policy!r}")
        return T.AutoAugment(_POLICIES[aug_cfg.autoaugment_policy])
    if op == "randaugment":
        return T.RandAugment(aug_cfg.randaugment_ops, aug_cfg.randaugment_magnitude)
    return None


def batch_augment(aug_cfg, num_classes: int, early_head: EarlyHead | None) -> KeepAugment | None:
    """The device-side step of ``aug.method`` (None when the method has none)."""
    p = plan(aug_cfg.method)
    if p.batch_op is None:
        return None
    dtype = {"": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[aug_cfg.saliency_dtype]
    common = dict(selective=p.selective, tau=aug_cfg.tau, target=aug_cfg.saliency_target, low_res=aug_cfg.low_res,
                  low_res_factor=aug_cfg.low_res_factor, early_head=early_head if p.selective else None,
                  saliency_dtype=dtype)
    if p.batch_op in ("cutout", "paste"):
        return KeepAugment(p.batch_op, aug_cfg.length, fill=0.0, **common)
    if p.batch_op == "erasing":
        return KeepAugment("erasing", p=aug_cfg.erasing_prob, fill="random", erasing_area=tuple(aug_cfg.erasing_area),
                           erasing_ratio=tuple(aug_cfg.erasing_ratio), **common)
    return KeepAugment("cutmix", p=aug_cfg.cutmix_prob, cutmix_beta=aug_cfg.cutmix_beta, num_classes=num_classes,
                       **common)
