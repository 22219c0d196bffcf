"""Two CPU processes (gloo) under torchrun: identical weights after every step, disjoint data shards,
only rank 0 writes checkpoints and logs."""

import json
import socket
import subprocess
import sys
from pathlib import Path

from .conftest import BASE, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp(tiny_overrides, tmp_path):
    out = tmp_path / "records"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(Path(__file__).with_name("ddp_worker.py")), str(BASE), str(out),
           *tiny_overrides, "train.device=cpu", "train.epochs=2", "train.max_steps_per_epoch=3",
           "aug.method=keep_cutout", "aug.early_head=true", "data.limit_train=96"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert len(r0["steps"]) == len(r1["steps"]) == 6
    for a, b in zip(r0["steps"], r1["steps"]):
        assert a["step"] == b["step"] and a["digest"] == b["digest"]  # identical weights after every step
    for epoch in (0, 1):
        seen0 = [i for s in r0["steps"] if s["epoch"] == epoch for i in s["indices"]]
        seen1 = [i for s in r1["steps"] if s["epoch"] == epoch for i in s["indices"]]
        assert seen0 and seen1 and not set(seen0) & set(seen1)  # disjoint shards
    assert r0["saves"] and not r1["saves"] and r0["log_enabled"] and not r1["log_enabled"]
    assert r0["keep_seed"] != r1["keep_seed"]  # each rank draws its own boxes
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "metrics.csv").is_file()
