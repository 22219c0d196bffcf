"""Device-resident loader vs DataLoader workers on CIFAR-10 (a benchmark, not a test): images/s of the
data pipeline alone (one epoch of augmented uint8 batches) and of short training epochs through each, with
the one-off decode time of the device loader reported apart.

    python tools/bench_loader.py --data ../shared/data/cifar10-jpeg.tar.gz [--device cpu] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import torch

from classification.engine import Trainer
from classification.schema import ClsConfig
from core.engine.config import load_config
from tools.bench_cifar import BASE
from tools.bench_common import cifar_root


def loader_only(trainer) -> float:
    """Images/s of iterating the train loader for one epoch (augmented uint8 batches on the trainer's device)."""
    n, t0 = 0, time.perf_counter()
    trainer.loader.set_epoch(0)
    for batch in trainer.loader:
        n += len(batch.images.to(trainer.device, non_blocking=True))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 folder or the JPEG archive")
    ap.add_argument("--cache", default="data/cifar10-jpeg")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=5000, help="images per training epoch (evenly spaced)")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per loader (the first is a warm-up)")
    ap.add_argument("--out", default="outputs/bench_loader.json")
    args = ap.parse_args()
    root = cifar_root(args.data, args.cache)
    common = [f"data.root={root}", "data.dataset=cifar10", f"train.device={args.device}", "train.tensorboard=false",
              "train.progress=false", "model.kwargs={width: 16}", "aug.method=cutout", "data.limit_val=1000",
              "train.output_dir=outputs/bench_loader_run"]
    rows = []
    for loader in ("workers", "device"):
        settings = [*common, f"data.loader={loader}", f"data.workers={args.workers}"]
        t0 = time.perf_counter()
        full = Trainer(load_config(ClsConfig, BASE, settings))
        build_s = time.perf_counter() - t0
        pipeline = loader_only(full)
        del full
        trainer = Trainer(load_config(ClsConfig, BASE, [*settings, f"data.limit_train={args.train_images}",
                                                        f"train.epochs={args.epochs}"]))
        trainer.fit(overwrite=True)
        with open(trainer.out / "metrics.csv", newline="") as f:
            train = float(list(csv.DictReader(f))[-1]["img_s"])  # the last epoch (the first warms up)
        rows.append({"loader": loader, "setup_s": round(build_s, 1), "pipeline_img_s": round(pipeline),
                     "train_img_s": round(train, 1)})
        print(json.dumps(rows[-1]), flush=True)
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    report = {"machine": machine, "torch": torch.__version__, "workers": args.workers, "rows": rows,
              "pipeline_ratio_device_to_workers": rows[1]["pipeline_img_s"] / rows[0]["pipeline_img_s"],
              "train_ratio_device_to_workers": rows[1]["train_img_s"] / rows[0]["train_img_s"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("\n| loader | setup (s) | pipeline img/s | training img/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['loader']} | {r['setup_s']} | {r['pipeline_img_s']} | {r['train_img_s']} |")
    print(f"\n{machine}; device / workers: pipeline {report['pipeline_ratio_device_to_workers']:.1f}x, "
          f"training {report['train_ratio_device_to_workers']:.2f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
