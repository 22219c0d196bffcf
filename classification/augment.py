"""Augmentation, composed: an image-level policy x a region op x the keep options.

``aug.image`` (``none | autoaugment | randaugment``) runs in the data pipeline on PIL images;
``aug.region`` (``none | cutout | erasing | cutmix``) runs on the device per batch through
:class:`core.KeepAugment`; ``aug.keep_cut`` makes the region op selective and ``aug.keep_paste`` pastes
the clean image's important region back after the image policy (the loader then yields the pair
clean / augmented with the same crop and flip). Order, as in the recipes the paper follows:
crop/flip -> image policy -> selective paste -> region op (Cutout last, as in the AutoAugment CIFAR
code). With both keep steps the saliency is computed once per batch (:class:`core.KeepPipeline`).

``aug.method`` names a preset of these four keys (:data:`PRESETS`); a component key set explicitly
overrides the preset, so ``method: keep_autoaugment`` + ``region: cutout`` is AutoAugment + paste +
Cutout, and ``method: keep_cutout`` + ``image: randaugment`` is RandAugment + KeepCutout.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchvision import transforms as T

from core import EarlyHead, KeepAugment, KeepPipeline
from core.engine.sections import keep_from_config

# uda_randaugment: google-research/uda's RandAugment + Cutout 16 (classification.uda_randaugment), not torchvision's
IMAGE_OPS = ("none", "autoaugment", "randaugment", "uda_randaugment")
REGION_OPS = ("none", "cutout", "erasing", "cutmix")
# preset -> (image, region, keep_cut, keep_paste)
PRESETS = {
    "none": ("none", "none", False, False),
    "cutout": ("none", "cutout", False, False),
    "keep_cutout": ("none", "cutout", True, False),
    "random_erasing": ("none", "erasing", False, False),
    "keep_random_erasing": ("none", "erasing", True, False),
    "cutmix": ("none", "cutmix", False, False),
    "keep_cutmix": ("none", "cutmix", True, False),
    "autoaugment": ("autoaugment", "none", False, False),
    "keep_autoaugment": ("autoaugment", "none", False, True),
    "autoaugment_cutout": ("autoaugment", "cutout", False, False),
    "keep_autoaugment_cutout": ("autoaugment", "cutout", False, True),
    "randaugment": ("randaugment", "none", False, False),
    "keep_randaugment": ("randaugment", "none", False, True),
}
METHODS = tuple(PRESETS)
_POLICIES = {"cifar10": T.AutoAugmentPolicy.CIFAR10, "imagenet": T.AutoAugmentPolicy.IMAGENET,
             "svhn": T.AutoAugmentPolicy.SVHN}


@dataclass(frozen=True)
class AugPlan:
    """The resolved pipeline: image policy in the loader, the pair, the device-side steps."""

    image_op: str | None  # "autoaugment" | "randaugment" | None
    region_op: str | None  # "cutout" | "erasing" | "cutmix" | None
    keep_cut: bool
    keep_paste: bool

    @property
    def pair(self) -> bool:
        """The loader yields (clean, augmented): the paste needs the clean image."""
        return self.keep_paste

    @property
    def selective(self) -> bool:
        return self.keep_cut or self.keep_paste


def plan(aug_cfg) -> AugPlan:
    """``aug.method``'s preset with the explicitly set component keys on top, checked."""
    method = aug_cfg.method or "none"
    if method not in PRESETS:
        raise ValueError(f"aug.method must be one of {', '.join(METHODS)}, got {method!r}")
    image, region, keep_cut, keep_paste = PRESETS[method]
    image = aug_cfg.image or image
    region = aug_cfg.region or region
    keep_cut = keep_cut if aug_cfg.keep_cut is None else aug_cfg.keep_cut
    keep_paste = keep_paste if aug_cfg.keep_paste is None else aug_cfg.keep_paste
    if image not in IMAGE_OPS:
        raise ValueError(f"aug.image must be one of {', '.join(IMAGE_OPS)}, got {image!r}")
    if region not in REGION_OPS:
        raise ValueError(f"aug.region must be one of {', '.join(REGION_OPS)}, got {region!r}")
    if keep_cut and region == "none":
        raise ValueError(f"aug.keep_cut needs a region op (aug.region is none with aug.method={method})")
    if keep_paste and image == "none":
        raise ValueError(f"aug.keep_paste needs an image policy to paste into (aug.image is none with "
                         f"aug.method={method})")
    return AugPlan(None if image == "none" else image, None if region == "none" else region, keep_cut, keep_paste)


def image_transform(aug_cfg):
    """The PIL-level AutoAugment / RandAugment / UDA RandAugment of ``aug.image`` (None without one)."""
    op = aug_cfg.plan.image_op
    if op == "uda_randaugment":
        from .uda_randaugment import UDARandAugment

        return UDARandAugment(cutout=aug_cfg.uda_cutout)
    if op == "autoaugment":
        if aug_cfg.autoaugment_policy not in _POLICIES:
            raise ValueError(f"aug.autoaugment_policy must be one of {sorted(_POLICIES)}, "
                             f"got {aug_cfg.autoaugment_policy!r}")
        return T.AutoAugment(_POLICIES[aug_cfg.autoaugment_policy])
    if op == "randaugment":
        return T.RandAugment(aug_cfg.randaugment_ops, aug_cfg.randaugment_magnitude)
    return None


def batch_augment(aug_cfg, num_classes: int, early_head: EarlyHead | None) -> KeepAugment | KeepPipeline | None:
    """The device-side steps: a :class:`KeepAugment` for one step, a :class:`KeepPipeline` for paste +
    region op, None for none."""
    p = aug_cfg.plan

    def op(name: str, selective: bool, **options) -> KeepAugment:
        return keep_from_config(name, aug_cfg, selective=selective, early_head=early_head, **options)

    paste = op("paste", True, size=aug_cfg.length, fill=0.0) if p.keep_paste else None
    region = None
    if p.region_op == "cutout":
        region = op("cutout", p.keep_cut, size=aug_cfg.length, fill=0.0)
    elif p.region_op == "erasing":
        region = op("erasing", p.keep_cut, p=aug_cfg.erasing_prob, fill="random",
                    erasing_area=tuple(aug_cfg.erasing_area), erasing_ratio=tuple(aug_cfg.erasing_ratio))
    elif p.region_op == "cutmix":
        region = op("cutmix", p.keep_cut, p=aug_cfg.cutmix_prob, cutmix_beta=aug_cfg.cutmix_beta,
                    num_classes=num_classes)
    if paste is not None and region is not None:
        return KeepPipeline(paste, region)
    return paste or region
