"""Two CPU processes (gloo) under torchrun keep BoT's recipe: the global batch is P x K and an epoch has
as many steps as one process has (each rank loads P / W whole identities of the same P x K batch)."""

import json
import subprocess
import sys
from pathlib import Path

from core.engine.config import load_config
from reid.engine import ReidTrainer
from reid.schema import ReidConfig

from ..classification.test_ddp import free_port
from .test_train import BASE, ROOT, tiny  # noqa: F401  (fixture)


def test_two_process_ddp_keeps_the_global_batch_and_steps(tiny, tmp_path):  # noqa: F811
    overrides = [*tiny, "train.epochs=1", "train.max_steps_per_epoch=2", "eval.every=100"]
    single = ReidTrainer(load_config(ReidConfig, BASE, overrides))
    single.sampler.set_epoch(0)
    one = [batch.indices.tolist() for batch in single.loader]
    out = tmp_path / "records"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(Path(__file__).with_name("ddp_worker_reid.py")), str(BASE),
           str(out), *overrides, f"train.output_dir={tmp_path / 'ddp'}"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert single.loader.batch_size == 8 and r0["batch_size"] == r1["batch_size"] == 4  # P=4 x K=2, split
    assert r0["steps_per_epoch"] == r1["steps_per_epoch"] == len(single.loader) == len(one) > 2
    for whole, a, b in zip(one, r0["batches"], r1["batches"], strict=True):
        assert a + b == whole  # the ranks' batches make up the one-process batch: global batch P x K
    assert r0["digest"] == r1["digest"]  # DDP kept the replicas identical
