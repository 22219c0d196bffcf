"""Run by tests/classification/test_ddp.py under torchrun: trains briefly and records, per rank, a
digest of the weights after every step, the sample indices seen, and which files the rank wrote."""

import hashlib
import json
import sys
from pathlib import Path

import classification.engine as engine
import core.engine.checkpoint as checkpoint
from classification.schema import ClsConfig
from core.engine.config import load_config
from core.engine.hooks import Hook


class Record(Hook):
    def __init__(self):
        self.steps = []

    def after_step(self, trainer, batch):
        blob = b"".join(p.detach().cpu().numpy().tobytes() for p in trainer.module.parameters())
        self.steps.append({"epoch": trainer.epoch, "step": trainer.step, "digest": hashlib.sha256(blob).hexdigest(),
                           "indices": batch.indices.tolist()})


def main():
    config, out_dir, *overrides = sys.argv[1:]
    saves = []
    original = checkpoint.atomic_save
    checkpoint.atomic_save = lambda obj, path: (saves.append(str(path)), original(obj, path))[1]
    trainer = engine.Trainer(load_config(ClsConfig, config, overrides), hooks=[record := Record()])
    trainer.fit()
    result = {"rank": trainer.info.rank, "world": trainer.info.world_size, "steps": record.steps, "saves": saves,
              "log_enabled": trainer.log.enabled, "keep_seed": trainer.generator.initial_seed(),
              "device_data": trainer.device_data}
    Path(out_dir, f"rank{trainer.info.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
