"""The training runtime shared by every trainer of this project (classification, UDA, re-ID).

Modules, each one concern: :mod:`~core.engine.config` (the typed config system),
:mod:`~core.engine.sections` (config sections every trainer shares: ``train`` and the saliency keys),
:mod:`~core.engine.checkpoint` (atomic checkpoints, RNG states), :mod:`~core.engine.distributed`
(torchrun processes), :mod:`~core.engine.run_dir` (run-directory and resume rules), :mod:`~core.engine.logs`
(``metrics.csv``, TensorBoard, ``train.log``), :mod:`~core.engine.seeding` (per-item augmentation seeds),
:mod:`~core.engine.batch` (the typed batch), :mod:`~core.engine.workers` (DataLoader worker errors),
:mod:`~core.engine.hooks` and :mod:`~core.engine.trainer` (one loop: ``fit`` / epochs / evaluation /
checkpoints around a subclass's ``run_step``).

Nothing is imported here: ``import core`` and ``import core.engine`` load neither yaml, tqdm nor TensorBoard.
``core.engine`` imports no downstream package.
"""
