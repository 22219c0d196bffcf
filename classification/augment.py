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

``aug.policy_order`` places the image policy: ``after_crop`` (torchvision / timm, and the ImageNet AutoAugment
code, tensorflow/tpu ``efficientnet/preprocessing.py`` ``preprocess_for_train``: crop, flip, then the policy)
or ``before_crop`` (AutoAugment's CIFAR code, tensorflow/models ``research/autoaugment/data_utils.py``
``next_batch``: the policy on the stored image, then pad-and-crop, flip, Cutout). Either way the paste's clean
image is the crop / flip of the image and nothing else, under the same crop and flip as the policy's view.

Two sync-free device-side steps that core's per-image :class:`~core.KeepAugment` does not have, with its
interface: :class:`BatchCutMix` (``aug.cutmix_mode=batch``) and :class:`AreaMatchedCutout` (``aug.cutout_area``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import transforms as T

from core import EarlyHead, KeepAugment, KeepOutput, KeepParams, KeepPipeline, ops
from core.draws import permutation, uniform
from core.engine.sections import keep_from_config
from core.policy import random_boxes
from core.sampling import sample_cutmix_sizes

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
    # the paste and a selective Cutout sharing one saliency map: the Cutout never takes a box scoring above
    # the threshold, as the pasted one does (it can still overlap it in part)
    "keep_autoaugment_keep_cutout": ("autoaugment", "cutout", True, True),
    "randaugment": ("randaugment", "none", False, False),
    "keep_randaugment": ("randaugment", "none", False, True),
}
METHODS = tuple(PRESETS)
POLICY_ORDERS = ("after_crop", "before_crop")
CUTMIX_MODES = ("elem", "batch")  # timm's names: one lambda / box per image, or per batch (CutMix-PyTorch)
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
    mode = aug_cfg.cutmix_mode
    for key, value, allowed in (("image", image, IMAGE_OPS), ("region", region, REGION_OPS),
                                ("cutmix_mode", mode, CUTMIX_MODES)):
        if value not in allowed:
            raise ValueError(f"aug.{key} must be one of {', '.join(allowed)}, got {value!r}")
    if keep_cut and region == "none":
        raise ValueError(f"aug.keep_cut needs a region op (aug.region is none with aug.method={method})")
    if keep_paste and image == "none":
        raise ValueError(f"aug.keep_paste needs an image policy to paste into (aug.image is none with "
                         f"aug.method={method})")
    if mode == "batch" and region == "cutmix" and keep_cut:
        raise ValueError("aug.cutmix_mode=batch draws one box for the whole batch, but KeepCutMix (aug.keep_cut "
                         "with aug.region=cutmix) picks each image's box from that image's own saliency: it is "
                         "per image by construction; use aug.cutmix_mode=elem (CutMix elem is its like-for-like "
                         "control)")
    area = aug_cfg.cutout_area
    if area and (region != "cutout" or keep_cut):
        raise ValueError(f"aug.cutout_area={area} sets the mean area of a plain Cutout (the area-matched control "
                         f"of KeepCutout); it needs aug.region=cutout without aug.keep_cut (got region {region}, "
                         f"keep_cut {keep_cut})")
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
    if p.region_op == "cutout" and aug_cfg.cutout_area:
        region = AreaMatchedCutout(aug_cfg.cutout_area)
    elif p.region_op == "cutmix" and aug_cfg.cutmix_mode == "batch":
        region = BatchCutMix(aug_cfg.cutmix_beta, aug_cfg.cutmix_prob, num_classes)
    elif p.region_op == "cutout":
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


class _PlainRegionOp:
    """A non-selective region step with :class:`~core.KeepAugment`'s interface (``sample`` / ``apply`` /
    ``__call__``), so the trainer and :class:`~core.KeepPipeline` run it like one."""

    op: str
    selective = False

    def sample(self, model: nn.Module | None, x: torch.Tensor, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None, saliency: torch.Tensor | None = None) -> KeepParams:
        raise NotImplementedError

    def apply(self, params: KeepParams, x: torch.Tensor, y: torch.Tensor | None = None,
              x_aug: torch.Tensor | None = None, generator: torch.Generator | None = None) -> KeepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, model: nn.Module | None, x: torch.Tensor, y: torch.Tensor | None = None,
                 x_aug: torch.Tensor | None = None, generator: torch.Generator | None = None) -> KeepOutput:
        return self.apply(self.sample(model, x, y, generator), x, y, x_aug, generator)


class BatchCutMix(_PlainRegionOp):
    """CutMix with one lambda and one box for the whole batch (``aug.cutmix_mode=batch``), as CutMix-PyTorch
    ``train.py`` (lines 230-237: one ``r < cutmix_prob`` draw, one ``lam ~ Beta(beta, beta)``, one ``rand_bbox``
    and one ``randperm`` of partners per batch; lambda re-adjusted to the clipped box).

    The draws come from ``generator`` on the batch's device and use core's samplers and placement
    (:func:`core.sampling.sample_cutmix_sizes` for one batch of 1, :func:`core.policy.random_boxes`, clipped
    boxes, centre uniform over the pixels), so it differs from the per-image CutMix (``elem``) only in sharing
    the draw; applied with :func:`core.ops.cutmix` / :func:`core.ops.mix_targets`, no host sync. When the
    batch is not mixed (probability ``1 - p``) the box is empty and the targets are the one-hot labels.
    """

    op = "cutmix"

    def __init__(self, beta: float = 1.0, p: float = 1.0, num_classes: int | None = None) -> None:
        if beta <= 0:
            raise ValueError(f"cutmix_beta must be > 0, got {beta!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"cutmix_prob must be in [0, 1], got {p!r}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes (a positive int) is required for CutMix's soft targets, got {num_classes!r}")
        self.beta, self.p, self.num_classes = float(beta), float(p), num_classes

    @torch.no_grad()
    def sample(self, model, x, y=None, generator=None, saliency=None) -> KeepParams:
        b, _, h, w = x.shape
        size = sample_cutmix_sizes(1, h, w, self.beta, self.p, generator, x.device)  # (1, 2), (0, 0) if skipped
        box = random_boxes(1, h, w, size, "clip", generator, x.device)
        perm = permutation(b, generator, x.device)
        return KeepParams(box.expand(b, 4), perm)

    @torch.no_grad()
    def apply(self, params, x, y=None, x_aug=None, generator=None) -> KeepOutput:
        if y is None:
            raise ValueError("y is required for cutmix (the targets are mixed)")
        out, lam = ops.cutmix(x, params.boxes, params.perm)
        target = ops.mix_targets(y, params.perm, lam, self.num_classes)
        return KeepOutput(out, target, params.boxes, lam, params.perm)

    def __repr__(self) -> str:
        return f"BatchCutMix(beta={self.beta}, p={self.p}, one lambda and box per batch)"


def clipped_extent(length: int, size: int) -> float:
    """Mean extent, along one axis of ``size`` pixels, of a side-``length`` box placed as core's ``"clip"``
    placement does (centre uniform over the pixels, start ``centre - length // 2``, clipped to the image)."""
    return sum(min(size, c - length // 2 + length) - max(0, c - length // 2) for c in range(size)) / size


def mean_clipped_area(length: int, height: int, width: int) -> float:
    """Mean pixels per image that a plain Cutout of side ``length`` cuts (the two axes are independent)."""
    return clipped_extent(length, height) * clipped_extent(length, width)


@functools.lru_cache(maxsize=64)
def area_matched_lengths(area: float, height: int, width: int) -> tuple[int, float]:
    """``(L, q)``: a Cutout of side ``L + 1`` with probability ``q``, else ``L``, cuts ``area`` pixels per image
    on average (mean clipped areas grow with the side, so ``L`` is the side just below)."""
    areas = [mean_clipped_area(n, height, width) for n in range(min(height, width) + 1)]
    if not 0.0 <= area <= areas[-1]:
        raise ValueError(f"aug.cutout_area must be in [0, {areas[-1]:.1f}] for {height}x{width} images, got {area}")
    for n in range(len(areas) - 1):
        if areas[n] <= area <= areas[n + 1]:
            gap = areas[n + 1] - areas[n]
            return n, (area - areas[n]) / gap if gap else 0.0
    return len(areas) - 1, 0.0


class AreaMatchedCutout(_PlainRegionOp):
    """Plain Cutout whose mean cut area is ``area`` pixels per image (``aug.cutout_area``): each image's side
    is ``L`` or ``L + 1`` (:func:`area_matched_lengths`), drawn with ``generator`` on the device, the box placed
    and clipped as core's Cutout (:func:`core.policy.random_boxes`), filled with 0 (the mean colour in
    normalised space). The control for KeepCutout, whose sum score (Eq. 1) prefers border-clipped boxes and
    so cuts less than Cutout's 196 px at 32x32, length 16: a Cutout that cuts as much as the Keep arm."""

    op = "cutout"

    def __init__(self, area: float, fill: float = 0.0) -> None:
        if area <= 0:
            raise ValueError(f"area must be > 0, got {area!r}")
        self.area, self.fill = float(area), fill

    @torch.no_grad()
    def sample(self, model, x, y=None, generator=None, saliency=None) -> KeepParams:
        b, _, h, w = x.shape
        side, q = area_matched_lengths(self.area, h, w)
        longer = uniform((b,), generator, x.device) < q
        sizes = (longer.long() + side)[:, None].expand(b, 2)
        return KeepParams(random_boxes(b, h, w, sizes, "clip", generator, x.device))

    @torch.no_grad()
    def apply(self, params, x, y=None, x_aug=None, generator=None) -> KeepOutput:
        return KeepOutput(ops.cutout(x, params.boxes, self.fill), y, params.boxes)

    def __repr__(self) -> str:
        return f"AreaMatchedCutout(area={self.area})"
