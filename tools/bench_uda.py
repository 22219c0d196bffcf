"""Small-budget UDA comparison (a benchmark, not a test): UDA's RandAugment + Cutout 16 vs KeepRandAugment
on top of it (max-logit, low-res saliency) as the strong augmentation of UDA on CIFAR-10, over n seeds;
mean ± std test top-1, mask rate and images/s, as a table and JSON. ``--arms`` adds the torchvision
``RandAugment(2, 9)`` arms (``tv_randaugment``, ``keep_tv_randaugment``) for comparison.

    python tools/bench_uda.py --data ../shared/data/cifar10-jpeg.tar.gz --preset cpu   # reduced, 2 cores
    python tools/bench_uda.py --data /data/cifar10 --preset gpu                         # WRN-28-2, one H100

``--data`` is a CIFAR-10 folder or the JPEG archive (extracted once into ``--cache``). The presets draw a
class-balanced labelled set per seed (``uda.split=balanced``, seeded by ``uda.split_seed``): the JPEG copy is
sorted by class, so UDA's own split (the first images in CIFAR-10's stored order) does not exist there.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from classification.uda import SemiConfig, UDATrainer
from core.engine.config import load_config
from tools.bench_common import bench_parser, cifar_root, compare_arms, mean_std

BASE = Path(__file__).resolve().parents[1] / "classification" / "configs" / "uda" / "base.yaml"
# the strong view: UDA's own RandAugment + Cutout 16 (classification/uda_randaugment.py, the configs' default),
# or torchvision's RandAugment(2, 9) (aug.image=randaugment); keep_* add the selective paste
ARMS = {"uda_randaugment": ["aug.method=randaugment", "aug.image=uda_randaugment"],
        "keep_uda_randaugment": ["aug.method=keep_randaugment", "aug.image=uda_randaugment"],
        "tv_randaugment": ["aug.method=randaugment", "aug.image=randaugment"],
        "keep_tv_randaugment": ["aug.method=keep_randaugment", "aug.image=randaugment"]}
DEFAULT_ARMS = ["uda_randaugment", "keep_uda_randaugment"]
PRESETS = {
    # 2 CPU cores: narrow ResNet-18, 250 labels, labelled batch 16 + 2 x 32 unlabelled, 3 x 100 steps
    "cpu": dict(seeds=2, overrides=[
        "model.name=cifar_resnet18", "model.kwargs={width: 16}", "uda.labels=250", "data.batch_size=16",
        "uda.unsup_ratio=2", "train.epochs=3", "train.max_steps_per_epoch=100", "data.workers=0",
        "train.device=cpu", "data.limit_val=2000", "uda.split=balanced"]),
    # one H100: WRN-28-2, 4,000 labels, the UDA batch (64 + 5 x 64), 5 x 1,000 steps
    "gpu": dict(seeds=2, overrides=["uda.labels=4000", "train.epochs=5", "train.max_steps_per_epoch=1000",
                                    "data.workers=8", "train.amp=bf16", "model.channels_last=true",
                                    "train.device=cuda", "uda.split=balanced"]),
}


def main() -> None:
    ap = bench_parser(__doc__, PRESETS, cache="data/cifar10-jpeg", out="outputs/bench_uda")
    ap.add_argument("--arms", nargs="*", default=DEFAULT_ARMS, choices=list(ARMS))
    args = ap.parse_args()
    preset, root = PRESETS[args.preset], cifar_root(args.data, args.cache)

    def train(arm: str, seed: int) -> dict:
        cfg = load_config(SemiConfig, BASE, [f"data.root={root}", *preset["overrides"], *args.overrides, *ARMS[arm],
                                             f"train.seed={seed}", f"uda.split_seed={seed}",
                                             f"train.output_dir={Path(args.out) / f'{arm}_s{seed}'}",
                                             "train.tensorboard=false", "train.progress=false"])
        metrics = UDATrainer(cfg).fit(overwrite=True)
        return {k: metrics[k] for k in ("val_top1", "mask_rate", "img_s")}

    def summary(runs: list[dict]) -> dict:
        return {"top1": mean_std([r["val_top1"] for r in runs]),
                "mask_rate": round(statistics.mean(r["mask_rate"] for r in runs), 3),
                "img_s": round(statistics.mean(r["img_s"] for r in runs))}

    compare_arms("bench_uda", args, args.seeds or preset["seeds"], args.arms, train, summary,
                 {"test top-1 (%)": "top1", "mask rate": "mask_rate", "img/s": "img_s"})


if __name__ == "__main__":
    main()
