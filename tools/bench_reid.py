"""Fixed-budget re-ID comparison (a benchmark, not a test): BoT with plain random erasing vs selective
random erasing (KeepAugment), trained for a small budget and evaluated (rank-1, mAP, mINP), over n seeds.

    python tools/bench_reid.py --data ../shared/data/market1501-mini.tar.gz --preset cpu    # 2 cores, mini subset
    python tools/bench_reid.py --data ../shared/data/market1501.tar.gz --preset gpu         # full Market-1501

``--data`` is a Market-1501 folder or a ``.tar.gz`` of one (extracted once into ``--cache``). No ImageNet
weights can be fetched offline, so the presets train from scratch unless ``model.pretrained=PATH`` is
given: the figures compare the two arms, not the paper's absolute numbers.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from core.engine.config import load_config
from reid.engine import ReidTrainer
from reid.schema import ReidConfig
from tools.bench_common import bench_parser, compare_arms, folder_or_extracted, mean_std

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
    preset = PRESETS[args.preset]
    root = folder_or_extracted(args.data, Path(args.cache) / Path(args.data).name.split(".")[0])

    def train(arm: str, seed: int) -> dict:
        cfg = load_config(ReidConfig, BASE, [f"data.root={root}", *preset["overrides"], *args.overrides, *ARMS[arm],
                                             f"train.seed={seed}", "train.progress=false", "train.tensorboard=false",
                                             f"train.output_dir={Path(args.out) / f'{arm}_s{seed}'}"])
        m = ReidTrainer(cfg).fit(overwrite=True)
        return {k: m[k] for k in ("rank1", "mAP", "mINP", "img_s")}

    def summary(runs: list[dict]) -> dict:
        return {**{k: mean_std([r[k] for r in runs], digits=1) for k in ("rank1", "mAP", "mINP")},
                "img_s": round(statistics.mean(r["img_s"] for r in runs))}

    compare_arms("bench_reid", args, args.seeds or preset["seeds"], ARMS, train, summary,
                 {"rank-1": "rank1", "mAP": "mAP", "mINP": "mINP", "train img/s": "img_s"})


if __name__ == "__main__":
    main()
