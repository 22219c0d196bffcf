"""Early-loss head (KeepAugment Sec. 3.1): a global-average-pool + linear classifier fed by a forward
hook on a named module of any backbone (e.g. ``layer1``), without rewriting the model.

Training adds ``weight * CE(aux_logits, y)`` (0.3 in the paper, an Inception-style auxiliary loss);
the saliency pass takes the gradient of the aux logits, and the forward is cut short at the hook
point, so both the forward and the backward only go through the modules before it. The saliency is the
gradient w.r.t. the input pixels, so for a transformer it reaches them through the patch embedding.

The hook point may output ``(B, C, H, W)`` maps, ``(B, H, W, C)`` channels-last stages (Swin) or
``(B, N, C)`` tokens (ViT / DeiT; class and register tokens are left out of the pool): see
:mod:`core.layout` for how the layout is known.

The head is its own ``nn.Module``: give its parameters to the optimizer and keep its ``state_dict`` in
checkpoints. It never becomes a submodule of the backbone, so exported backbones do not contain it.
Under DDP, wrap :class:`~core.wrappers.BackboneWithHead` (backbone and head) so the head is synchronised.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .layout import check_layout, declared, pool, resolve_layout, resolve_prefix
from .wrappers import unwrap_model

_COMPILE_HINT = ("torch.compile does not see hooks added after a compiled call (dynamo does not guard on "
                 "module hooks): attach the EarlyHead before the model's first compiled call, or call "
                 "torch._dynamo.reset() after attaching it")


class _StopForward(Exception):
    """Raised by the hook to end a forward pass early (saliency through the early head)."""


def infer_channels(module: nn.Module) -> int:
    """Output channels of a block: those of its last registered norm / conv / linear layer."""
    for m in reversed(list(module.modules())):
        for attr in ("num_features", "out_channels", "out_features"):
            if isinstance(getattr(m, attr, None), int):
                return getattr(m, attr)
        shape = getattr(m, "normalized_shape", None)  # LayerNorm
        if isinstance(shape, tuple) and len(shape) == 1:
            return shape[0]
    raise ValueError(f"cannot infer the output channels of {type(module).__name__}; pass in_channels")


def is_compiled(model: nn.Module) -> bool:
    """``torch.compile(model)`` (an ``OptimizedModule``) or ``model.compile()`` in place."""
    return hasattr(model, "_orig_mod") or getattr(model, "_compiled_call_impl", None) is not None


class EarlyHead(nn.Module):
    """Auxiliary classifier on the output of ``model.<at>``.

    Args:
        model: the backbone (possibly DDP-wrapped); the hook goes on its inner module.
        at: dotted name of the hook point, e.g. ``"layer1"`` (``model.get_submodule(at)``).
        num_classes: number of classes of the auxiliary logits.
        in_channels: channels at the hook point (declared by timm's ``feature_info``, else inferred
            from the block's last norm / conv / linear layer, if omitted).
        weight: coefficient of the auxiliary cross-entropy in the training loss.
        layout: ``"nchw"``, ``"nhwc"`` or ``"tokens"`` (None: declared by the model or read from the shape;
            an ambiguous shape is an error).
        prefix_tokens: leading non-patch tokens of a ``"tokens"`` output (None: timm's
            ``num_prefix_tokens``, torchvision ViT's class token).
    """

    def __init__(self, model: nn.Module, at: str, num_classes: int, in_channels: int | None = None,
                 weight: float = 0.3, *, layout: str | None = None, prefix_tokens: int | None = None) -> None:
        super().__init__()
        net = unwrap_model(model)
        try:
            point = net.get_submodule(at)
        except AttributeError as err:
            names = [n for n, _ in net.named_children()]
            raise ValueError(f"early head hook point {at!r} does not exist in {type(net).__name__} "
                             f"(top-level modules: {names})") from err
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        check_layout(layout, prefix_tokens)
        if isinstance(model, nn.parallel.DistributedDataParallel):
            warnings.warn("EarlyHead on a DistributedDataParallel model: the head is not part of the DDP module, "
                          "so its gradients are not averaged across ranks and its weights drift apart. Build the "
                          "head on the bare backbone and wrap DDP(BackboneWithHead(backbone, head)) instead",
                          stacklevel=2)
        self.at, self.weight = at, float(weight)
        self.layout, self.prefix_tokens = layout, prefix_tokens
        self._declared = declared(net, at, point)
        self.fc = nn.Linear(in_channels or self._declared.channels or infer_channels(point), num_classes)
        self._features: torch.Tensor | None = None
        self._stop = False
        self._handle = point.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args, output) -> None:
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"the early head's hook point {self.at!r} returned a {type(output).__name__}, not a "
                             f"tensor: hook a module whose output is the feature tensor")
        self._features = output
        if self._stop:
            raise _StopForward

    def remove(self) -> None:
        """Detach the hook from the backbone."""
        self._handle.remove()

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The globally averaged features ``(B, C)`` over the image positions, whatever the layout."""
        layout = resolve_layout(features, self.fc.in_features, self.layout, self._declared.layout, self.at)
        prefix = resolve_prefix(features, self.prefix_tokens, self._declared, self.at) if layout == "tokens" else 0
        return pool(features, layout, prefix)

    def forward(self, features: torch.Tensor | None = None) -> torch.Tensor:
        """Aux logits ``(B, K)`` for ``features`` or, by default, those captured by the last forward
        (which are then released)."""
        if features is None:
            if self._features is None:
                raise RuntimeError(f"EarlyHead has no captured features: run the backbone forward first (if the "
                                   f"backbone is compiled: {_COMPILE_HINT})")
            features, self._features = self._features, None
        return self.fc(self.pool(features))

    def loss(self, target: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """``weight * CE(aux_logits, target)`` for ``logits`` (e.g. from :class:`BackboneWithHead`), by
        default those of the last forward (indices or soft ``(B, K)`` targets)."""
        logits = self() if logits is None else logits
        return self.weight * F.cross_entropy(logits.float(), target)

    def saliency_pooled(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``model`` only up to the hook point and return the pooled features ``(B, C)`` of ``x`` (the aux
        logits are ``fc`` of them). The gradient of the aux logit ``k`` with respect to them is ``fc.weight[k]``,
        so a label's saliency needs no head forward or backward (:func:`core.saliency.saliency_map`)."""
        self._stop, self._features = True, None
        try:
            model(x)
        except _StopForward:
            pass
        finally:
            self._stop = False
        if self._features is None:
            why = (f"{type(model).__name__} is compiled, and {_COMPILE_HINT}" if is_compiled(model) else
                   "does the model's forward call this module?")
            raise RuntimeError(f"the forward never reached the early head's hook point {self.at!r}: {why}")
        features, self._features = self._features, None
        return self.pool(features)

    def extra_repr(self) -> str:
        layout = f", layout={self.layout!r}" if self.layout else ""
        return f"at={self.at!r}, weight={self.weight}{layout}"
