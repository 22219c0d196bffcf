"""Fingerprints of fixed tiny runs of every trainer: a checksum of the final checkpoint's tensors and the
last metrics row, used to show that a refactoring of the training side changes no number.

``python -m tests.fingerprints OUT.json [NAME ...]`` writes the fingerprints of the code in the working tree;
the values recorded before the refactoring live in ``tests/fingerprints_65d03d0.json`` and
``tests/test_fingerprints.py`` compares against them. Runs use one CPU thread, deterministic algorithms and
no workers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MINI = Path("/tmp") / "keepaug-market-mini"

CLS_TINY = ["data.dataset=sample", "data.root=", "data.batch_size=16", "data.workers=0", "data.limit_train=48",
            "data.limit_val=32", "model.kwargs={width: 4}", "train.epochs=2", "train.max_steps_per_epoch=2",
            "train.tensorboard=false", "train.progress=false", "train.deterministic=true", "aug.length=8"]
UDA_TINY = ["data.dataset=sample", "data.root=", "data.batch_size=10", "data.workers=0", "data.limit_val=40",
            "model.kwargs={}", "uda.labels=100", "uda.split=balanced", "uda.unsup_ratio=2", "train.epochs=2",
            "train.max_steps_per_epoch=2",
            "train.tensorboard=false", "train.progress=false", "train.deterministic=true", "uda.threshold=0.1"]
REID_TINY = [f"data.root={MINI}", "model.pretrained=", "model.depth=18", "data.p=4", "data.k=2", "data.height=64",
             "data.width=32", "data.pad=4", "data.workers=0", "data.test_batch=128", "train.device=cpu",
             "train.progress=false", "train.tensorboard=false", "train.deterministic=true", "optim.warmup_epochs=0",
             "optim.lr=0.001", "train.max_steps_per_epoch=4", "train.epochs=2", "eval.every=2", "aug.keep=true",
             "aug.erasing_fill=mean"]  # mean: the fill before aug.erasing_fill existed (BoT quirk is the default)

RUNS = {
    "cls_cutout": ("cls", ["aug.method=cutout"]),
    "cls_keep_cutout": ("cls", ["aug.method=keep_cutout", "aug.low_res=true", "aug.early_head=true"]),
    "cls_keep_aa_cutout": ("cls", ["aug.method=keep_autoaugment_cutout", "optim.clip_grad_norm=5"]),
    "uda_randaugment": ("uda", ["aug.method=randaugment"]),
    "uda_keep": ("uda", ["aug.method=keep_randaugment"]),
    "reid_keep": ("reid", []),
}


def tensors_digest(ckpt: dict) -> str:
    """sha256 over the weights, early head, centres and optimizer state tensors of a checkpoint."""
    h = hashlib.sha256()

    def walk(name: str, obj) -> None:
        if isinstance(obj, torch.Tensor):
            h.update(name.encode())
            h.update(obj.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                walk(f"{name}.{k}", obj[k])
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{name}.{i}", v)

    for key in ("model", "aux_head", "center", "optimizer", "center_optimizer"):
        walk(key, ckpt.get(key))
    return h.hexdigest()


def last_metrics(out: Path) -> dict:
    with open(out / "metrics.csv", newline="") as f:
        row = list(csv.DictReader(f))[-1]
    return {k: v for k, v in row.items() if k not in ("img_s", "seconds")}


def run(name: str, out: Path) -> dict:
    """Train run ``name`` of :data:`RUNS` into ``out``; returns ``{"digest", "metrics"}``."""
    kind, extra = RUNS[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if kind == "cls":
            from classification.engine import Trainer
            from classification.schema import ClsConfig
            cfg_cls, trainer_cls, base = ClsConfig, Trainer, "classification/configs/cifar10/base.yaml"
            tiny = CLS_TINY
        elif kind == "uda":
            from classification.uda import SemiConfig, UDATrainer
            cfg_cls, trainer_cls, base = SemiConfig, UDATrainer, "classification/configs/uda/base.yaml"
            tiny = UDA_TINY
        else:
            from reid.engine import ReidTrainer
            from reid.schema import ReidConfig
            cfg_cls, trainer_cls, base = ReidConfig, ReidTrainer, "reid/configs/bot_r50_keep.yaml"
            tiny = REID_TINY
        from core.engine.config import load_config
        cfg = load_config(cfg_cls, ROOT / base, [*tiny, *extra, f"train.output_dir={out}"])
        trainer_cls(cfg).fit()
        ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        return {"digest": tensors_digest(ckpt), "metrics": last_metrics(out)}
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


if __name__ == "__main__":
    import tempfile

    target, names = Path(sys.argv[1]), sys.argv[2:] or list(RUNS)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            result[name] = run(name, Path(tmp) / name)
    target.write_text(json.dumps(result, indent=1))
