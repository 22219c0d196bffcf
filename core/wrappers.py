"""Model wrappers the saliency pass looks through, and the one that puts an early head under DDP.

:class:`BackboneWithHead` holds a backbone and its :class:`~core.early_head.EarlyHead` in one module, so
``DistributedDataParallel(BackboneWithHead(backbone, head))`` averages the head's gradients across ranks
like the backbone's (a head kept outside the DDP module trains on each rank's own gradients and drifts
apart). Its forward returns ``(logits, aux_logits)``.

:func:`unwrap_model` strips DDP / DataParallel and :class:`BackboneWithHead`, so the saliency pass runs
on the bare backbone: no gradient all-reduce, and the backbone's own ``(B, K)`` logits.
"""

from __future__ import annotations

import torch
from torch import nn


class BackboneWithHead(nn.Module):
    """``backbone`` and its early ``head`` as one module (for DDP); ``forward(x) -> (logits, aux_logits)``
    (``aux_logits`` None without a head, so a trainer can hold the pair whether or not it uses one).

    The head's hook must be on ``backbone`` (``EarlyHead(backbone, ...)``, not on a DDP wrapper); wrap this
    module, not the backbone, in ``DistributedDataParallel``, give its ``parameters()`` to the optimizer
    and use ``head.loss(y, aux_logits)`` for the auxiliary term.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.backbone(x)
        return logits, (self.head() if self.head is not None else None)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The inner module of DDP / DataParallel wrappers and the backbone of a :class:`BackboneWithHead`
    (nested in any order)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(model, BackboneWithHead):
            model = model.backbone
        else:
            return model
