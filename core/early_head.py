"""Early-loss head (KeepAugment Sec. 3.1): a global-average-pool + linear classifier fed by a forward
hook on a named module of any backbone (e.g. ``layer1``), without rewriting the model.

Training adds ``weight * CE(aux_logits, y)`` (0.3 in the paper, an Inception-style auxiliary loss);
the saliency pass takes the gradient of the aux logits, and the forward is cut short at the hook
point, so both the forward and the backward only go through the modules before it.

The head is its own ``nn.Module``: give its parameters to the optimizer and keep its ``state_dict`` in
checkpoints. It never becomes a submodule of the backbone, so exported backbones do not contain it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .saliency import unwrap_model


class _StopForward(Exception):
    """Raised by the hook to end a forward pass early (saliency through the early head)."""


def infer_channels(module: nn.Module) -> int:
    """Output channels of a block: those of its last conv (``out_channels``) or norm (``num_features``)."""
    for m in reversed(list(module.modules())):
        for attr in ("num_features", "out_channels"):
            if isinstance(getattr(m, attr, None), int):
                return getattr(m, attr)
    raise ValueError(f"cannot infer the output channels of {type(module).__name__}; pass in_channels")


class EarlyHead(nn.Module):
    """Auxiliary classifier on the output of ``model.<at>``.

    Args:
        model: the backbone (possibly DDP-wrapped); the hook goes on its inner module.
        at: dotted name of the hook point, e.g. ``"layer1"`` (``model.get_submodule(at)``).
        num_classes: number of classes of the auxiliary logits.
        in_channels: channels at the hook point (inferred from the block's last conv/norm if omitted).
        weight: coefficient of the auxiliary cross-entropy in the training loss.
    """

    def __init__(self, model: nn.Module, at: str, num_classes: int, in_channels: int | None = None,
                 weight: float = 0.3) -> None:
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
        self.at, self.weight = at, float(weight)
        self.fc = nn.Linear(in_channels or infer_channels(point), num_classes)
        self._features: torch.Tensor | None = None
        self._stop = False
        self._handle = point.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args, output: torch.Tensor) -> None:
        self._features = output
        if self._stop:
            raise _StopForward

    def remove(self) -> None:
        """Detach the hook from the backbone."""
        self._handle.remove()

    def forward(self, features: torch.Tensor | None = None) -> torch.Tensor:
        """Aux logits ``(B, K)`` for ``features`` or, by default, those captured by the last forward
        (which are then released)."""
        if features is None:
            if self._features is None:
                raise RuntimeError("EarlyHead has no captured features: run the backbone forward first")
            features, self._features = self._features, None
        return self.fc(features.mean((2, 3)))  # = global average pool; deterministic backward on CUDA

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        """``weight * CE(aux_logits, target)`` for the features of the last forward (indices or soft
        ``(B, K)`` targets)."""
        logits = self()
        return self.weight * F.cross_entropy(logits.float(), target)

    def saliency_logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``model`` only up to the hook point and return the aux logits of ``x``."""
        self._stop, self._features = True, None
        try:
            model(x)
        except _StopForward:
            pass
        finally:
            self._stop = False
        if self._features is None:
            raise RuntimeError(f"the forward never reached the early head's hook point {self.at!r}")
        return self()

    def extra_repr(self) -> str:
        return f"at={self.at!r}, weight={self.weight}"
