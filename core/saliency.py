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
full resolution (bilinear, non-negative); a model that declares a fixed input size (timm ViT / DeiT / Swin
without ``dynamic_img_size=True``, torchvision ViT) is an error naming ``low_res``. An
:class:`core.early_head.EarlyHead` makes the pass stop at its hook point and take the auxiliary logits, so
backprop only traverses the modules before it. A float16 pass scales its backward (:mod:`core.grad_scale`).
A model returning a tuple or a dict needs ``output=`` to pick its logits (:mod:`core.model_io`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_batched, check_choice, check_images
from .grad_scale import INIT_SCALE, SaliencyScaler, pass_dtype, unscale
from .model_io import Output, fixed_input_size, low_res_error, select_logits
from .wrappers import unwrap_model

TARGETS = ("label", "max_logit")


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
    output: Output = None,
    grad_scale: float | SaliencyScaler | None = None,
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
        output: for a model that does not return a logits tensor: a key, an index or a callable that
            picks the ``(B, K)`` logits from its output (see :func:`core.model_io.select_logits`).
        grad_scale: loss scale of a float16 pass (ignored for other dtypes): a number, or a running
            :class:`~core.grad_scale.SaliencyScaler` on ``x``'s device, updated in place; None = 2**12.
            In a float16 pass an image whose scaled gradient overflows gets an all-zero map.

    Raises:
        RuntimeError: when called under ``torch.inference_mode()``, where autograd is unavailable.
    """
    if not torch.compiler.is_compiling() and torch.is_inference_mode_enabled():  # compiled code never runs in it
        raise RuntimeError("saliency_map needs autograd: call it outside torch.inference_mode() "
                           "(torch.no_grad() is fine, grad is re-enabled inside)")
    check_images(x)
    check_choice(mode, TARGETS, "mode")
    if mode == "label":
        _check_target(target, x.shape[0])
        target = _usable(target)
    net = unwrap_model(model)
    height, width = x.shape[2:]
    inp = _usable(downscale(x.detach().float(), low_res_factor).to(_input_dtype(net)))
    low = tuple(inp.shape[2:]) if low_res_factor != 1.0 else None
    fixed = fixed_input_size(net) if low is not None else None
    if fixed is not None and fixed != low:
        raise ValueError(low_res_error(net, low, (height, width), low_res_factor, fixed))
    scaler = grad_scale if isinstance(grad_scale, SaliencyScaler) else None
    scale = None  # only float16 passes are scaled
    if pass_dtype(x.device, autocast_dtype, inp.dtype) == torch.float16:
        scale = scaler.scale if scaler is not None else INIT_SCALE if grad_scale is None else grad_scale
    failure = partial(low_res_error, net, low, (height, width), low_res_factor, None) if low is not None else None
    grad = _input_gradient(net, inp, target, mode, early_head, autocast_dtype, output, scale, failure)
    sal = torch.linalg.vector_norm(grad.detach(), float("inf"), dim=1).float()  # max_c |g_c|, one kernel
    if scale is not None:
        sal, overflowed = unscale(sal, scale)
        if scaler is not None:
            scaler.update(sal, overflowed)
    if sal.shape[1:] != (height, width):
        sal = F.interpolate(sal[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return sal


def _input_gradient(net, inp, target, mode, early_head, autocast_dtype, output, scale, low_res_failure):
    """d(chosen logit, times ``scale`` when given) / d(input) for ``inp``, in eval mode with grad enabled;
    a model's own size assertion during a low-res pass becomes ``RuntimeError(low_res_failure())``.

    The early head is linear in the pooled features, so a label's gradient starts there with ``fc.weight[y]``
    (what autograd's one-hot ``mm`` gives, bit for bit) and the head never runs. Inside ``torch.compile``
    the gradient is a ``torch.func.vjp`` of the forward (the compiled graph cannot return values derived
    from an intermediate's ``requires_grad_``); its backward is autograd's, bit for bit."""
    cast = (torch.autocast(inp.device.type, dtype=autocast_dtype) if autocast_dtype is not None
            else contextlib.nullcontext())
    early_label = early_head is not None and mode == "label"

    def forward(i: torch.Tensor) -> torch.Tensor:
        try:
            out = net(i) if early_head is None else early_head.saliency_pooled(net, i)
        except AssertionError as err:  # a model's own size check (timm _assert, torch._assert)
            if low_res_failure is None:
                raise
            raise RuntimeError(low_res_failure()) from err
        if early_label:
            return out
        logits = select_logits(out, output) if early_head is None else early_head.fc(out)
        if logits.dim() != 2 or logits.shape[0] != i.shape[0]:
            raise ValueError(f"model must return (B, K) logits, got shape {tuple(logits.shape)}")
        chosen = logits.gather(1, target.to(logits.device).long()[:, None]) if mode == "label" else \
            logits.max(dim=1).values
        objective = chosen.float().sum()
        return objective if scale is None else objective * scale

    def cotangent(out: torch.Tensor) -> torch.Tensor:
        if not early_label:
            return torch.ones_like(out)
        weight = early_head.fc.weight.index_select(0, target.to(out.device).long())  # d(aux logit y) / d(pooled)
        return (weight if scale is None else weight * scale).to(out.dtype)

    with eval_mode(net), torch.enable_grad(), cast:
        if torch.compiler.is_compiling():
            out, backward = torch.func.vjp(forward, inp)
            (grad,) = backward(cotangent(out))
        else:  # a compiled model cannot run under torch.func's transforms
            inp.requires_grad_(True)
            out = forward(inp)
            (grad,) = torch.autograd.grad(out, inp, cotangent(out))
    return grad


def _check_target(target: torch.Tensor | None, batch: int) -> None:
    if target is None:
        raise ValueError("target is required when mode='label' (use mode='max_logit' for unlabelled data)")
    check_batched(target, batch, "target")
    if target.dim() == 2 and target.is_floating_point():
        raise ValueError(f"target must be (B,) class indices for the label's saliency, got soft (B, K) targets "
                         f"{tuple(target.shape)}: use the max logit instead (KeepAugment(target='max_logit'), "
                         f"saliency_map(mode='max_logit')), which needs no labels, or pass y.argmax(1)")
    if target.dim() != 1 or target.is_floating_point():
        raise ValueError(f"target must be (B,) class indices, got {target.dtype} {tuple(target.shape)}")


def _input_dtype(net: nn.Module) -> torch.dtype:
    """The dtype the model computes in: that of its first floating-point parameter, else float32."""
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)


def _usable(t: torch.Tensor) -> torch.Tensor:
    """An inference tensor (made under ``torch.inference_mode()``) cannot take part in autograd; a clone
    made outside inference mode is a normal tensor."""
    return t.clone() if not torch.compiler.is_compiling() and t.is_inference() else t
