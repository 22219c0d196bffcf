"""Fixed-budget CIFAR-10 comparison (a benchmark, not a test): Cutout vs KeepCutout at lengths 16 and
24 (and KeepCutout 16 with area-normalised region scores, ``aug.region_score=mean``), RandAugment vs
KeepRandAugment, and AutoAugment + Cutout vs AutoAugment + paste + Cutout, over n seeds. Reports per
seed and as mean ± std: test top-1, the paired difference to the arm's baseline (same seed), the mean
area actually cut (pixels per image: border boxes are clipped), training images/s and the keep
overhead (the arm's fastest median epoch time over seeds relative to its baseline's), as a table and
JSON.

    python tools/bench_cifar.py --data ../shared/data/cifar10-jpeg.tar.gz --preset cpu    # < 1 h, 2 cores
    python tools/bench_cifar.py --data /data/cifar10 --preset gpu                           # one H100

``--data`` is a CIFAR-10 folder (torchvision format or ImageFolder layout) or the JPEG archive, which is
extracted once into ``--cache``. Extra ``key=value`` arguments override every arm's config.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import tarfile
import time
from pathlib import Path

import torch

from classification.engine import Trainer
from classification.schema import ClsConfig
from core.engine.config import load_config

BASE = Path(__file__).resolve().parents[1] / "classification" / "configs" / "cifar10" / "base.yaml"
ARMS = {
    "cutout16": ["aug.method=cutout", "aug.length=16"],
    "keep_cutout16": ["aug.method=keep_cutout", "aug.length=16"],
    "keep_cutout16_mean": ["aug.method=keep_cutout", "aug.length=16", "aug.region_score=mean"],
    "cutout24": ["aug.method=cutout", "aug.length=24"],
    "keep_cutout24": ["aug.method=keep_cutout", "aug.length=24"],
    "randaugment": ["aug.method=randaugment", "aug.length=16"],
    "keep_randaugment": ["aug.method=keep_randaugment", "aug.length=16"],
    "autoaugment_cutout16": ["aug.method=autoaugment_cutout", "aug.length=16"],
    "keep_autoaugment_cutout16": ["aug.method=keep_autoaugment_cutout", "aug.length=16"],
}
PAIRS = {"keep_cutout16": "cutout16", "keep_cutout16_mean": "cutout16", "keep_cutout24": "cutout24",
         "keep_randaugment": "randaugment", "keep_autoaugment_cutout16": "autoaugment_cutout16"}
PRESETS = {
    # 2 CPU cores: a width-16 ResNet-18 on 10,000 evenly spaced train images, 4 epochs, 3 seeds
    "cpu": dict(seeds=3, overrides=["model.kwargs={width: 16}", "data.limit_train=10000", "data.batch_size=128",
                                    "data.workers=0", "train.epochs=4", "optim.lr=0.1", "train.device=cpu"]),
    # one H100: the paper's ResNet-18 on all 50,000 images, 30 epochs, bf16, channels_last
    "gpu": dict(seeds=1, overrides=["data.workers=8", "train.epochs=30", "train.amp=bf16",
                                    "model.channels_last=true", "train.device=cuda"]),
}


def folder_or_extracted(data: str, cache: Path) -> Path:
    """``data`` itself if it is a folder, else the archive ``data`` extracted once into ``cache``."""
    path = Path(data)
    if path.is_dir():
        return path
    if not path.is_file():
        raise SystemExit(f"--data {data}: neither a folder nor an archive")
    marker = cache / ".extracted"
    if not marker.exists():
        print(f"extracting {path} into {cache} ...", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as tar:
            tar.extractall(cache, filter="data")
        marker.touch()
    return cache


def cifar_root(data: str, cache: str) -> Path:
    out = folder_or_extracted(data, Path(cache))
    if out == Path(data):
        return out
    roots = [p.parent for p in out.rglob("train") if p.is_dir() and (p.parent / "test").is_dir()]
    if not roots:
        raise SystemExit(f"{data} has no train/ and test/ folders")
    return roots[0]


def run_arm(name: str, seed: int, root: Path, overrides: list[str], out_dir: Path) -> dict:
    """One (arm, seed) run; a run already finished in ``out_dir`` with the same settings is reused, so an
    interrupted benchmark continues where it stopped."""
    run_dir = out_dir / f"{name}_s{seed}"
    settings = [f"data.root={root}", "data.dataset=cifar10", *overrides, *ARMS[name], f"train.seed={seed}",
                f"train.output_dir={run_dir}", "train.tensorboard=false"]
    done = run_dir / "bench_result.json"
    if done.is_file():
        stored = json.loads(done.read_text())
        if stored.get("settings") == settings:
            print(f"   reusing the finished run in {run_dir}", flush=True)
            return stored["result"]
    result = train_arm(name, seed, settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"settings": settings, "result": result}, indent=2))
    return result


def train_arm(name: str, seed: int, settings: list[str]) -> dict:
    cfg = load_config(ClsConfig, BASE, settings)
    trainer = Trainer(cfg)
    meter = None
    if cfg.aug.plan.region_op is not None:
        trainer.keep = meter = CutAreaMeter(trainer.keep)
    metrics = trainer.fit(overwrite=True)
    with open(trainer.out / "metrics.csv", newline="") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    return {"seed": seed, "top1": metrics["val_top1"], "img_s": metrics["img_s"],
            "sec_per_epoch": statistics.median(seconds), "cut_area": meter.mean() if meter else None}


class CutAreaMeter:
    """Wraps the trainer's keep step and sums the area of the region op's boxes on the device (read once,
    at the end): the pixels actually cut per image, after clipping at the borders."""

    def __init__(self, keep) -> None:
        self.keep, self.total, self.images = keep, None, 0

    def __call__(self, *args, **kwargs):
        out = self.keep(*args, **kwargs)
        b = out.boxes
        area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum()
        self.total = area if self.total is None else self.total + area
        self.images += len(b)
        return out

    def mean(self) -> float | None:
        return None if self.total is None else round(self.total.item() / self.images, 1)


def summarise(results: dict[str, list[dict]]) -> list[dict]:
    """One row per arm: mean ± std top-1, the paired per-seed difference to its baseline, the mean cut area,
    images/s, the keep overhead, and the runs."""
    rows = []
    for arm, runs in results.items():
        base = PAIRS.get(arm)
        paired = overhead = None
        if base in results:
            # the fastest epoch time of each arm (over seeds) is the least disturbed by other load
            overhead = min(r["sec_per_epoch"] for r in runs) / min(r["sec_per_epoch"] for r in results[base])
            by_seed = {r["seed"]: r["top1"] for r in results[base]}
            paired = [r["top1"] - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]
        areas = [r["cut_area"] for r in runs if r.get("cut_area") is not None]
        rows.append({"arm": arm, "baseline": base, "top1": mean_std([r["top1"] for r in runs]),
                     "paired_diff": f"{mean_std(paired, signed=True)} (n={len(paired)})" if paired else "-",
                     "cut_area": f"{statistics.mean(areas):.1f}" if areas else "-",
                     "img_s": round(statistics.mean(r["img_s"] for r in runs)),
                     "keep_overhead": f"{overhead:.2f}x" if overhead else "-", "runs": runs})
    return rows


def mean_std(values: list[float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    if len(values) > 1:
        return f"{statistics.mean(values):{sign}.2f} ± {statistics.stdev(values):.2f}"
    return f"{values[0]:{sign}.2f}"


def bench_parser(doc: str, presets: dict, cache: str, out: str) -> argparse.ArgumentParser:
    """The options every fixed-budget benchmark takes (bench_cifar, bench_uda, bench_reid)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", required=True, help="the data folder or its archive")
    ap.add_argument("--cache", default=cache, help="where an archive is extracted")
    ap.add_argument("--preset", choices=sorted(presets), default="cpu")
    ap.add_argument("--seeds", type=int, help="number of seeds (default: the preset's)")
    ap.add_argument("--out", default=out)
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every arm")
    return ap


def main() -> None:
    ap = bench_parser(__doc__, PRESETS, cache="data/cifar10-jpeg", out="outputs/bench_cifar")
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    root = cifar_root(args.data, args.cache)
    out = Path(args.out)
    results: dict[str, list[dict]] = {}
    cpu = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    device = torch.cuda.get_device_name() if args.preset == "gpu" else cpu
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds or preset["seeds"]):  # seed-major: a cut-short run has whole seeds
        for arm in args.arms:
            print(f"== {arm}, seed {seed}", flush=True)
            results.setdefault(arm, []).append(run_arm(arm, seed, root, [*preset["overrides"], *args.overrides], out))
            # written after every run: an interrupted benchmark keeps what it measured
            (out / "bench_cifar.json").write_text(json.dumps({
                "preset": args.preset, "device": device, "overrides": preset["overrides"] + args.overrides,
                "date": time.strftime("%Y-%m-%d"), "results": summarise(results)}, indent=2))
    rows = summarise(results)
    print(f"\n# bench_cifar, preset {args.preset}, {device}\n")
    print("| arm | test top-1 (%) | paired diff vs baseline (pp) | mean cut area (px) | train img/s | keep overhead |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['top1']} | {r['paired_diff']} | {r['cut_area']} | {r['img_s']} | "
              f"{r['keep_overhead']} |")
    print("\nper seed (top-1): " + "; ".join(f"{r['arm']} " + ", ".join(f"{x['top1']:.2f}" for x in r["runs"])
                                          for r in rows))
    print(f"\nwrote {out / 'bench_cifar.json'}")


if __name__ == "__main__":
    main()
