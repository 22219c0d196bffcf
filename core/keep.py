"""``KeepAugment``: the step-level object that composes saliency and a region op for one batch.

It runs after the batch is on the device, like timm's ``mixup_fn``::

    keep = KeepAugment("cutout", size=16, tau=0.6, low_res=True)
    out = keep(model, x, y, generator=g)        # x: (B, C, H, W) normalised, y: (B,)
    loss = F.cross_entropy(model(out.x), out.target)

Every option is independent (selective on/off, saliency target, low resolution, early head), so
``KeepAugment("cutout", selective=False)`` is plain Cutout through exactly the same code path.
The random step (:meth:`KeepAugment.sample`) returns the boxes; :meth:`KeepAugment.apply` is
deterministic given them.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import ops
from ._checks import check_batch, check_batched, check_choice, check_images, check_range, check_tau, host_readable
from .draws import permutation, uniform
from .grad_scale import SaliencyScaler
from .model_io import Output
from .policy import random_boxes, selective_boxes
from .regions import REDUCTIONS
from .saliency import TARGETS, saliency_map
from .sampling import sample_cutmix_sizes, sample_erasing_sizes
from .sizes import as_sizes, check_sizes_fit, parse_size

OPS = ("cutout", "erasing", "cutmix", "paste")


def count_zero_maps(saliency: torch.Tensor | None) -> torch.Tensor | None:
    """The number of all-zero ``(H, W)`` maps in ``saliency`` (a 0-d int64 tensor on its device)."""
    return None if saliency is None else (saliency.flatten(1).amax(1) == 0).sum()


@dataclass
class KeepParams:
    """The random choices for one batch: boxes ``(B, 4)``, CutMix partners and the saliency used
    (``zero_saliency``: how many of its maps are all zero, counted when read)."""

    boxes: torch.Tensor
    perm: torch.Tensor | None = None
    saliency: torch.Tensor | None = None

    @property
    def zero_saliency(self) -> torch.Tensor | None:
        return count_zero_maps(self.saliency)


@dataclass
class KeepOutput:
    """Augmented batch, its targets (soft ``(B, K)`` for CutMix), and the choices that made it.

    ``zero_saliency`` (selective ops): a 0-d int64 tensor on the batch's device, the number of images whose
    saliency map is all zero, for which the selective op drew uniformly like the plain op (a float16 pass
    that underflowed, or a model with no input gradient). It is counted when read (three kernels a step
    saved when nobody looks) and never read on an accelerator by this package (no host sync): read it where
    the loop already syncs, e.g. ``int(out.zero_saliency)`` when logging.
    """

    x: torch.Tensor
    target: torch.Tensor | None
    boxes: torch.Tensor
    lam: torch.Tensor | None = None
    perm: torch.Tensor | None = None
    saliency: torch.Tensor | None = None
    paste_boxes: torch.Tensor | None = None  # a KeepPipeline's paste step, before its region op
    zero_saliency = KeepParams.zero_saliency  # the same count of all-zero maps, not a field


class KeepAugment:
    """Selective-cut / selective-paste for a training batch.

    Args:
        op: ``"cutout"``, ``"erasing"`` (Random Erasing), ``"cutmix"`` or ``"paste"``.
        size: region side(s) for cutout and paste (16 by default, the CIFAR Cutout length): an integer
            or an ``(h, w)`` pair of integers (numpy integers too; floats such as ``16.0`` are an error),
            at most the image size; erasing and cutmix draw a size per image and take no ``size``.
        selective: False gives the plain op (uniform region, no saliency pass).
        tau: threshold quantile in [0, 1] (any real number, numpy scalars too).
        target: saliency from the ``"label"`` logit or the ``"max_logit"`` (unlabelled data).
        low_res: compute the saliency at ``low_res_factor`` resolution (bicubic).
        early_head: an :class:`~core.early_head.EarlyHead`; saliency from its logits.
        saliency_dtype: autocast dtype of the saliency pass (e.g. ``torch.bfloat16``; None = as the caller).
            A float16 pass keeps a running loss scale per device (:mod:`core.grad_scale`).
        output: for a model that does not return a logits tensor (tuple, dict): the key, index or callable
            that picks its ``(B, K)`` logits.
        p: probability of applying the op to each image.
        fill: Cutout fill (number or per-channel), or Random Erasing fill (``"random"``,
            ``"channel_random"``, ``"mean"``, number, per-channel).
        erasing_area, erasing_ratio, erasing_log_ratio, erasing_attempts: Random Erasing's draw.
        cutmix_beta: Beta(beta, beta) parameter of the CutMix area.
        num_classes: needed by cutmix to build soft targets from class indices.
        region_score: how a candidate region is scored: ``"sum"`` of its saliency (the paper's Eq. 1,
            default) or ``"mean"`` over the region clipped to the image (does not favour border boxes,
            which are smaller; see :func:`core.regions.region_scores`).
    """

    def __init__(
        self,
        op: str,
        size: int | tuple[int, int] | None = None,
        *,
        selective: bool = True,
        tau: float = 0.6,
        target: str = "label",
        low_res: bool = False,
        low_res_factor: float = 0.5,
        early_head: nn.Module | None = None,
        saliency_dtype: torch.dtype | None = None,
        p: float = 1.0,
        fill=None,
        erasing_area: tuple[float, float] = (0.02, 0.4),
        erasing_ratio: tuple[float, float] = (0.3, 1 / 0.3),
        erasing_log_ratio: bool = False,
        erasing_attempts: int = 100,
        cutmix_beta: float = 1.0,
        num_classes: int | None = None,
        region_score: str = "sum",
        output: Output = None,
    ) -> None:
        check_choice(op, OPS, "op")
        if op in ("erasing", "cutmix") and size is not None:
            raise ValueError(f"size is drawn per image for op={op!r}; do not pass size")
        if op == "cutmix" and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes (a positive int) is required for op='cutmix': the targets are mixed "
                             f"as (B, num_classes) soft targets; got {num_classes!r}")
        if size is not None:
            size = _static_size(size)
        check_choice(target, TARGETS, "target")
        check_tau(tau)
        check_tau(p, "p")
        check_range(erasing_area, "erasing_area", 0.0, 1.0)
        check_range(erasing_ratio, "erasing_ratio", 1e-6)
        if not 0.0 < low_res_factor <= 1.0:
            raise ValueError(f"low_res_factor must be in (0, 1], got {low_res_factor!r}")
        if cutmix_beta <= 0:
            raise ValueError(f"cutmix_beta must be > 0, got {cutmix_beta!r}")
        check_choice(region_score, REDUCTIONS, "region_score")
        self.region_score, self.output, self.saliency_dtype = region_score, output, saliency_dtype
        self._grad_scales: dict[torch.device, SaliencyScaler] = {}  # running float16 loss scale per device
        self._warned_zero = False
        self.op, self.selective, self.tau, self.target = op, selective, float(tau), target
        self.size = 16 if size is None and op in ("cutout", "paste") else size
        self.low_res, self.low_res_factor, self.early_head = low_res, float(low_res_factor), early_head
        self.p, self.fill = float(p), fill  # the fill setter also empties the fill cache
        self.erasing_area, self.erasing_ratio = tuple(erasing_area), tuple(erasing_ratio)
        self.erasing_log_ratio, self.erasing_attempts = erasing_log_ratio, erasing_attempts
        self.cutmix_beta, self.num_classes = float(cutmix_beta), num_classes

    @property
    def fill(self):
        """The op's fill (None = the op's default); the tensor built from it is cached per device and dtype."""
        return self._fill

    @fill.setter
    def fill(self, value) -> None:
        self._fill = value
        self._fill_cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _fill_for(self, x: torch.Tensor, default):
        """The fill for ``x``: an erasing mode string as is, else a ``(1, C, 1, 1)`` tensor built once per
        ``(device, dtype)`` (no per-call construction, no host-to-device copy)."""
        fill = default if self._fill is None else self._fill
        if isinstance(fill, str):
            return fill
        key = (x.device, x.dtype)
        if key not in self._fill_cache:
            self._fill_cache[key] = ops.fill_tensor(fill, x)
        return self._fill_cache[key]

    def _sizes(self, x: torch.Tensor, generator: torch.Generator | None):
        b, _, h, w = x.shape
        if self.op == "erasing":
            return sample_erasing_sizes(b, h, w, self.erasing_area, self.erasing_ratio, self.erasing_log_ratio,
                                        self.erasing_attempts, self.p, generator, x.device)
        if self.op == "cutmix":
            return sample_cutmix_sizes(b, h, w, self.cutmix_beta, self.p, generator, x.device)
        if self.p < 1.0:
            keep = uniform((b,), generator, x.device) < self.p
            return as_sizes(self.size, b, x.device) * keep[:, None]
        return self.size

    def saliency(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The saliency ``(B, H, W)`` this step uses (label or max logit, full or low resolution)."""
        if x.device not in self._grad_scales:
            self._grad_scales[x.device] = SaliencyScaler(x.device)
        return saliency_map(model, x, y, mode=self.target,
                            low_res_factor=self.low_res_factor if self.low_res else 1.0,
                            early_head=self.early_head, autocast_dtype=self.saliency_dtype, output=self.output,
                            grad_scale=self._grad_scales[x.device])

    def _warn_zero(self, sal: torch.Tensor) -> None:
        """Warn once about all-zero maps, on the CPU only, where counting them costs no device sync."""
        if self._warned_zero or not host_readable(sal):
            return
        zero = count_zero_maps(sal)
        if bool(zero):
            self._warned_zero = True
            warnings.warn(f"{int(zero)} of {sal.shape[0]} saliency maps are all zero, so the selective op drew "
                          f"those boxes uniformly: a float16 saliency pass that underflowed (use "
                          f"saliency_dtype=torch.bfloat16 or float32), or logits that do not depend on the input "
                          f"(a zero-initialised classifier)? KeepOutput.zero_saliency counts them (warned once)",
                          stacklevel=2)

    @torch.no_grad()
    def sample(self, model: nn.Module | None, x: torch.Tensor, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None, saliency: torch.Tensor | None = None) -> KeepParams:
        """The random step: boxes (and CutMix partners) for the batch ``x`` ``(B, C, H, W)``.

        ``saliency`` ``(B, H, W)``: a map already computed for ``x`` (e.g. by another selective step of
        the same batch, see :class:`core.compose.KeepPipeline`); None computes it with ``model``."""
        _check_inputs(x, y)
        b, _, h, w = x.shape
        if self.size is not None:  # before _sizes turns it into a tensor
            check_sizes_fit(self.size, h, w)
        sizes = self._sizes(x, generator)
        placement = "inside" if self.op == "erasing" else "clip"  # Random Erasing's box lies inside the image
        sal = None
        if self.selective:
            if saliency is not None:
                check_saliency_for(saliency, x)
                sal = saliency
            elif model is None:
                raise ValueError("model is required for a selective op (selective=True)")
            else:
                sal = self.saliency(model, x, y)
            boxes = selective_boxes(sal, sizes, self.tau, "above" if self.op == "paste" else "below",
                                    placement, generator, self.region_score)
            self._warn_zero(sal)
        else:
            boxes = random_boxes(b, h, w, sizes, placement, generator, x.device)
        perm = permutation(b, generator, x.device) if self.op == "cutmix" else None
        return KeepParams(boxes, perm, sal)

    @torch.no_grad()
    def apply(self, params: KeepParams, x: torch.Tensor, y: torch.Tensor | None = None,
              x_aug: torch.Tensor | None = None, generator: torch.Generator | None = None) -> KeepOutput:
        """The deterministic step (up to Random Erasing's random fill)."""
        _check_inputs(x, y, x_aug, self.op == "paste")
        lam, target = None, y
        if self.op == "cutout":
            out = ops.cutout(x, params.boxes, self._fill_for(x, 0.0))
        elif self.op == "erasing":
            out = ops.erase(x, params.boxes, self._fill_for(x, "random"), generator)
        elif self.op == "cutmix":
            if y is None:
                raise ValueError("y is required for cutmix (the targets are mixed)")
            out, lam = ops.cutmix(x, params.boxes, params.perm)
            target = ops.mix_targets(y, params.perm, lam, self.num_classes)
        else:
            out = ops.paste(x_aug, x, params.boxes)
        return KeepOutput(out, target, params.boxes, lam, params.perm, params.saliency)

    def __call__(self, model: nn.Module | None, x: torch.Tensor, y: torch.Tensor | None = None,
                 x_aug: torch.Tensor | None = None, generator: torch.Generator | None = None) -> KeepOutput:
        """Sample and apply for one batch. For ``op="paste"``, ``x`` is the clean batch and ``x_aug``
        its image-level augmentation (same crop/flip); saliency is taken on ``x``."""
        _check_inputs(x, y, x_aug, self.op == "paste")
        return self.apply(self.sample(model, x, y, generator), x, y, x_aug, generator)

    def __repr__(self) -> str:
        size = self.size if self.op in ("cutout", "paste") else "per-image"
        saliency = (f", target={self.target!r}, low_res={self.low_res_factor if self.low_res else False}, "
                    f"early_head={self.early_head.at if self.early_head is not None else None}"
                    f"{f', saliency_dtype={self.saliency_dtype}' if self.saliency_dtype else ''}")
        score = f", region_score={self.region_score!r}" if self.region_score != "sum" else ""
        return (f"KeepAugment(op={self.op!r}, size={size}, selective={self.selective}, tau={self.tau}, p={self.p}"
                f"{saliency if self.selective else ''}{score})")


def _static_size(size) -> int | tuple[int, int]:
    """A validated static size, kept as an ``int`` when square and given as one."""
    if isinstance(size, torch.Tensor):
        raise ValueError(f"size must be an int or an (h, w) pair for KeepAugment, got a tensor {tuple(size.shape)}")
    h, w = parse_size(size)
    return h if isinstance(size, numbers.Integral) else (h, w)


def check_saliency_for(saliency: torch.Tensor, x: torch.Tensor) -> None:
    """A given saliency map must be ``(B, H, W)`` of ``x``'s batch and size."""
    if not isinstance(saliency, torch.Tensor) or tuple(saliency.shape) != (x.shape[0], *x.shape[2:]):
        got = tuple(saliency.shape) if isinstance(saliency, torch.Tensor) else type(saliency).__name__
        raise ValueError(f"saliency must be (B, H, W) = {(x.shape[0], *x.shape[2:])} for x {tuple(x.shape)}, "
                         f"got {got}")


def _check_inputs(x: torch.Tensor, y: torch.Tensor | None = None, x_aug: torch.Tensor | None = None,
                  paste: bool = False) -> None:
    """``x`` first (so a malformed batch is reported as ``x``), then ``y`` and ``x_aug`` (required for a paste)."""
    check_images(x)
    if y is not None:
        check_batched(y, x.shape[0], "y")
    if x_aug is not None:
        check_images(x_aug, "x_aug")
        check_batch(x_aug.shape[0], x.shape[0], "x_aug")
    elif paste:
        raise ValueError("x_aug (the image-level augmentation of x) is required for op='paste'")
