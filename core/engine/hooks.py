"""Hooks: objects that observe a run without changing it (Detectron2's ``HookBase`` shape).

The trainer calls, in this order::

    hook.before_train(trainer)                  # after the run directory is set up (and any resume)
    for each epoch (or UDA round):
        for each step:
            trainer.run_step(batch)
            hook.after_step(trainer, batch)     # the step's typed batch; no device read happens here
        hook.after_epoch(trainer, epoch)        # after the checkpoint and the epoch's log line
    hook.after_train(trainer)                   # also when the run stops early (stop_after_epoch, error)
"""

from __future__ import annotations


class Hook:
    """Base of every hook passed to a trainer (``Trainer(cfg, hooks=[...])``); override what you need."""

    def before_train(self, trainer) -> None:
        """Once, before the first step of this process (``trainer.epoch`` / ``trainer.step``: where it starts)."""

    def after_step(self, trainer, batch) -> None:
        """After each optimisation step (``trainer.step`` already counts it)."""

    def after_epoch(self, trainer, epoch: int) -> None:
        """After epoch ``epoch`` (1-based) was evaluated, checkpointed and logged."""

    def after_train(self, trainer) -> None:
        """When ``fit`` ends, normally or not."""


def check_hooks(hooks) -> list[Hook]:
    """``hooks`` as a list, each a :class:`Hook` (a duck-typed object is an error naming it)."""
    hooks = list(hooks)
    for h in hooks:
        if not isinstance(h, Hook):
            raise TypeError(f"hooks must be core.engine.hooks.Hook instances, got {type(h).__name__}")
    return hooks
