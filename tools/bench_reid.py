"""Fixed-budget re-ID comparison (a benchmark, not a test): BoT with plain random erasing vs selective
random erasing (KeepAugment), trained for a small budget and evaluated (rank-1, mAP, mINP), over n seeds.

    python tools/bench_reid.py --data ../shared/data/market1501-mini.tar.gz --preset cpu    # 2 cores, mini subset
    python tools/bench_reid.py --data ../shared/data/market1501.tar.gz --preset gpu         # full Market-1501

``--data`` is a Market-1501 folder or a ``.tar.gz`` of one (extracted once into ``--cache``). No ImageNet
weights can be fetched offline, so the presets train from scratch unless ``model.pretrained=PATH`` is
given: the figures compare the two arms, not the paper's absolute numbers.
"""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path

import torch

from core.engine.config import load_config
from reid.engine import ReidTrainer
from reid.schema import ReidConfig
from tools.bench_cifar import bench_parser, folder_or_extracted, mean_std

BASE = Path(__file__).resolve().parents[1] / "reid" / "configs" / "base.yaml"
ARMS = {"random_erasing": ["aug.keep=false"], "keep_random_erasing": ["aug.keep=true"]}
PRESETS = {
    # 2 CPU cores, mini subset (25 train ids): ResNet-18, 128x64, P 8 x K 4, 12 epochs, no warmup
    "cpu": dict(seeds=2, overrides=["model.depth=18", "data.height=128", "data.width=64", "data.pad=5", "data.p=8",
                                    "data.k=4", "data.workers=0", "train.epochs=12", "optim.warmup_epochs=0",
                                    "optim.milestones=[8]", "eval.every=12", "train.device=cpu"]),
    # one GPU, full Market-1501: ResNet-50 at 256x128, the BoT batch, 30 epochs with the schedule compressed
    "gpu": dict(seeds=1, overrides=["model.depth=50", "data.workers=8", "train.epochs=30", "optim.warmup_epochs=3",
                                    "optim.milestones=[15, 25]", "eval.every=30", "train.amp=bf16",
                                    "model.channels_last=true", "train.device=cuda"]),
}


def main() -> None:
    args = bench_parser(__doc__, PRESETS, cache="data", out="outputs/bench_reid").parse_args()
    preset, out = PRESETS[args.preset], Path(args.out)
    root = folder_or_extracted(args.data, Path(args.cache) / Path(args.data).name.split(".")[0])
    results: dict[str, list[dict]] = {}
    for seed in range(args.seeds or preset["seeds"]):
        for arm, arm_overrides in ARMS.items():
            print(f"== {arm}, seed {seed}", flush=True)
            run_dir = out / f"{arm}_s{seed}"
            cfg = load_config(ReidConfig, BASE, [f"data.root={root}", *preset["overrides"], *args.overrides,
                                                 *arm_overrides, f"train.seed={seed}", "train.progress=false",
                                                 "train.tensorboard=false", f"train.output_dir={run_dir}"])
            m = ReidTrainer(cfg).fit(overwrite=True)
            results.setdefault(arm, []).append({k: m[k] for k in ("rank1", "mAP", "mINP", "img_s")})
    device = torch.cuda.get_device_name() if args.preset == "gpu" else f"{platform.machine()} CPU"
    print(f"\n# bench_reid, preset {args.preset}, {device}\n")
    print("| arm | rank-1 | mAP | mINP | train img/s |\n|---|---|---|---|---|")
    rows = []
    for arm, runs in results.items():
        row = {"arm": arm, **{k: mean_std([r[k] for r in runs], digits=1) for k in ("rank1", "mAP", "mINP")},
               "img_s": round(statistics.mean(r["img_s"] for r in runs)), "runs": runs}
        rows.append(row)
        print(f"| {arm} | {row['rank1']} | {row['mAP']} | {row['mINP']} | {row['img_s']} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_reid.json").write_text(json.dumps({"preset": args.preset, "device": device, "results": rows},
                                                    indent=2))
    print(f"\nwrote {out / 'bench_reid.json'}")


if __name__ == "__main__":
    main()
