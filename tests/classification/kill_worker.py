"""Run by test_train.py: trains like tools/train_cls.py but SIGKILLs itself in the middle of epoch 2
(after the epoch-1 checkpoint), like a preempted job."""

import os
import signal
import sys

from classification.engine import Trainer
from classification.schema import ClsConfig
from core.engine.config import load_config
from core.engine.hooks import Hook


class KillMidEpoch2(Hook):
    def after_step(self, trainer, batch):
        if trainer.epoch == 1 and trainer.step == trainer.steps_per_epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    config, *overrides = sys.argv[1:]
    Trainer(load_config(ClsConfig, config, overrides), hooks=[KillMidEpoch2()]).fit()
