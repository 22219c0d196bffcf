"""Run by tests/reid/test_ddp_reid.py under torchrun: records, per rank, the loader's batch size, steps
per epoch and the dataset indices of every batch of epoch 0, then trains briefly and records a digest of
the weights."""

import hashlib
import json
import sys
from pathlib import Path

from core.engine.config import load_config
from reid.engine import ReidTrainer
from reid.schema import ReidConfig


def main():
    config, out_dir, *overrides = sys.argv[1:]
    trainer = ReidTrainer(load_config(ReidConfig, config, overrides))
    trainer.sampler.set_epoch(0)
    batches = [batch.indices.tolist() for batch in trainer.loader]
    trainer.fit()
    blob = b"".join(p.detach().cpu().numpy().tobytes() for p in trainer.net.parameters())
    result = {"world": trainer.info.world_size, "batch_size": trainer.loader.batch_size,
              "steps_per_epoch": len(trainer.loader), "batches": batches,
              "digest": hashlib.sha256(blob).hexdigest()}
    Path(out_dir, f"rank{trainer.info.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
