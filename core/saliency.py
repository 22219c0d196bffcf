"""Vanilla-gradient saliency of the model being trained (Simonyan et al. 2014; KeepAugment Sec. 3).

``g_ij = max_c |d l_y(x) / d x_cij|`` with ``l_y`` the logit of the label (supervised) or the
largest logit (unlabelled data). The pass leaves no trace on the model:

- the gradient is taken with ``torch.autograd.grad`` w.r.t. a detached copy of the input only, so no
  parameter ``.grad`` is written, no ``requires_grad`` is toggled and no weight gradient is computed;
- the network runs in eval mode (BatchNorm uses and keeps its running statistics; examples do not
  interact), and every submodule's train/eval flag is restored afterwards, even on exceptions;
- DDP / DataParallel wrappers are unwrapped, so no gradient all-reduce is triggered.

The pass runs in the dtype of the model's parameters (float32, or bf16 / fp16 for a cast model) and
returns float32. It needs autograd, so it refuses to run under ``torch.inference_mode()``
(``torch.no_grad()`` is fine: grad is re-enabled inside); tensors created under inference mode are
accepted as inputs outside it.

Low-resolution saliency (Sec. 3.1) runs the pass on a bicubic-downscaled copy and maps the map back to
full resolution (bilinear, non-negative). An :class:`core.early_head.EarlyHead` makes the pass stop at
its hook point and take the auxiliary logits, so backprop only traverses the modules before it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_batched, check_images

TARGETS = ("label", "max_logit")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The inner module of DDP / DataParallel (and nested) wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each one's own flag on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def downscale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bicubic resize by ``factor`` (0 < factor <= 1); each side at least 1 pixel."""
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"low_res_factor must be in (0, 1], got {factor!r}")
    if factor == 1.0:
        return x
    size = (max(1, round(x.shape[2] * factor)), max(1, round(x.shape[3] * factor)))
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def saliency_map(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    mode: str = "label",
    low_res_factor: float = 1.0,
    early_head: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Saliency ``(B, H, W)`` float32, non-negative, at the resolution of ``x``.

    Args:
        model: any classifier ``(B, C, H, W) -> (B, K)`` logits (possibly DDP-wrapped).
        x: ``(B, C, H, W)`` model input (normalised as the model expects), any float dtype and memory
            format; it is not modified. It is cast to the dtype of the model's first floating-point
            parameter (float32 for a model without parameters).
        target: ``(B,)`` class indices; required for ``mode="label"``.
        mode: ``"label"`` (logit of ``target``) or ``"max_logit"`` (largest logit; no labels needed).
        low_res_factor: compute on a bicubic copy downscaled by this factor (1 = full resolution).
        early_head: an attached :class:`~core.early_head.EarlyHead`; its logits replace the model's.
        autocast_dtype: run this pass under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``)
            whatever the caller's context: a cheaper pass whose map ranks regions like the float32
            one (the map itself is returned in float32). None keeps the caller's autocast state.

    Raises:
        RuntimeError: when called under ``torch.inference_mode()``, where autograd is unavailable.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("saliency_map needs autograd: call it outside torch.inference_mode() "
                           "(torch.no_grad() is fine, grad is re-enabled inside)")
    check_images(x)
    if mode not in TARGETS:
        raise ValueError(f"mode must be one of {TARGETS}, got {mode!r}")
    if mode == "label":
        _check_target(target, x.shape[0])
        target = _usable(target)
    net = unwrap_model(model)
    height, width = x.shape[2:]
    inp = _usable(downscale(x.detach().float(), low_res_factor).to(_input_dtype(net)))
    inp.requires_grad_(True)
    cast = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
            else contextlib.nullcontext())
    with eval_mode(net), torch.enable_grad(), cast:
        logits = early_head.saliency_logits(net, inp) if early_head is not None else net(inp)
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"model must return (B, K) logits, got shape {tuple(logits.shape)}")
        if mode == "label":
            chosen = logits.gather(1, target.to(logits.device).long()[:, None])
        else:
            chosen = logits.max(dim=1).values
        (grad,) = torch.autograd.grad(chosen.float().sum(), inp)
    sal = grad.abs().amax(dim=1).float()
    if sal.shape[1:] != (height, width):
        sal = F.interpolate(sal[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return sal


def _check_target(target: torch.Tensor | None, batch: int) -> None:
    if target is None:
        raise ValueError("target is required when mode='label' (use mode='max_logit' for unlabelled data)")
    check_batched(target, batch, "target")
    if target.dim() != 1 or target.is_floating_point():
        raise ValueError(f"target must be (B,) class indices, got {target.dtype} {tuple(target.shape)}")


def _input_dtype(net: nn.Module) -> torch.dtype:
    """The dtype the model computes in: that of its first floating-point parameter, else float32."""
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)


def _usable(t: torch.Tensor) -> torch.Tensor:
    """An inference tensor (made under ``torch.inference_mode()``) cannot take part in autograd; a clone
    made outside inference mode is a normal tensor."""
    return t.clone() if t.is_inference() else t
