"""The training runtime shared by every trainer of this project (classification, UDA, re-ID): the typed config
system, checkpoints, torchrun processes, run-directory rules, logs, the typed batch, the captured or compiled
step, and the trainer base with its one loop (:mod:`~core.engine.trainer`); docs/development.md lists the modules.

Nothing is imported here: ``import core`` and ``import core.engine`` load neither yaml, tqdm nor TensorBoard.
``core.engine`` imports no downstream package.
"""
