"""Two CPU processes (gloo) under torchrun: identical weights after every step, disjoint data shards in
DistributedSampler's order (DataLoader workers and the device-resident loader alike), only rank 0 writes
checkpoints and logs."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.data import DistributedSampler

from classification.data import build_datasets
from classification.schema import ClsConfig
from core.engine.config import load_config

from .conftest import BASE, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loader", ["workers", "device"])
def test_two_process_ddp(loader, tiny_overrides, tmp_path):
    out = tmp_path / "records"
    out.mkdir()
    overrides = [*tiny_overrides, "train.device=cpu", "train.epochs=2", "train.max_steps_per_epoch=3",
                 "aug.method=keep_cutout", "aug.early_head=true", "data.limit_train=96", f"data.loader={loader}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(Path(__file__).with_name("ddp_worker.py")), str(BASE), str(out),
           *overrides]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["device_data"] is r1["device_data"] is (loader == "device")
    assert len(r0["steps"]) == len(r1["steps"]) == 6
    for a, b in zip(r0["steps"], r1["steps"]):
        assert a["step"] == b["step"] and a["digest"] == b["digest"]  # identical weights after every step
    subset = build_datasets(load_config(ClsConfig, BASE, overrides))[0].indices
    for epoch in (0, 1):
        seen = []
        for rank, record in enumerate((r0, r1)):
            mine = [i for s in record["steps"] if s["epoch"] == epoch for i in s["indices"]]
            sampler = DistributedSampler(range(96), 2, rank, shuffle=True, seed=0, drop_last=True)
            sampler.set_epoch(epoch)
            assert mine == [subset[k] for k in sampler]  # this rank's shard, in DistributedSampler's order
            seen.append(mine)
        assert len(seen[0]) == len(seen[1]) == 48 and not set(seen[0]) & set(seen[1])  # disjoint shards
        assert sorted(seen[0] + seen[1]) == sorted(subset)  # that together cover the epoch
    assert r0["saves"] and not r1["saves"] and r0["log_enabled"] and not r1["log_enabled"]
    assert r0["keep_seed"] != r1["keep_seed"]  # each rank draws its own boxes
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "metrics.csv").is_file()
