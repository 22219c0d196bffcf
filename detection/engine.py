"""Detectron2's DefaultTrainer with COCO evaluation (pycocotools) and strict backbone loading."""

from __future__ import annotations

import logging
import os

from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from .weights import load_weights

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """``tools/train_net.py``'s trainer: COCO box AP on each test set after training (and every
    ``TEST.EVAL_PERIOD`` iterations). Evaluation uses pycocotools' official COCOeval
    (``use_fast_impl=False``) so both install paths of Detectron2 give the same numbers."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, tasks=("bbox",), distributed=True, output_dir=output_folder,
                             use_fast_impl=False)

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from ``OUTPUT_DIR``'s last checkpoint if asked and present; otherwise load
        ``MODEL.WEIGHTS`` strictly with :func:`detection.weights.load_weights`."""
        if resume and self.checkpointer.has_checkpoint():
            super().resume_or_load(resume=True)
            logger.info("resumed from %s at iteration %d", self.checkpointer.get_checkpoint_file(), self.start_iter)
            return
        if self.cfg.MODEL.WEIGHTS:
            load_weights(self.checkpointer.model, self.cfg)
        self.start_iter = 0
