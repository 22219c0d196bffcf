"""`make demo`: Cutout vs KeepCutout on the embedded CIFAR-10 sample, then the Figure-1-style grid.

Trains the demo config (classification/configs/demo.yaml) twice on the CPU with the same seed and
budget, once with Cutout and once with KeepCutout, prints both test accuracies side by side, and
draws original | saliency | Cutout | KeepCutout | RandAugment | KeepRandAugment with the KeepCutout
model into outputs/demo/figure1.png. Extra ``key=value`` arguments override the config.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from classification.engine import Trainer
from classification.sample import load_sample
from classification.schema import ClsConfig
from core.engine.config import load_config
from tools import visualize

CONFIG = Path(__file__).resolve().parents[1] / "classification" / "configs" / "demo.yaml"


def main(overrides: list[str]) -> None:
    results, trainers = {}, {}
    first = load_config(ClsConfig, CONFIG, overrides)
    print(f"make demo: Cutout, then KeepCutout, {first.train.epochs} epochs each on the embedded sample; about "
          f"{round(7.5 * first.train.epochs / 25)} minutes on a 2-core CPU (fewer epochs: "
          f'make demo ARGS="train.epochs=5")', flush=True)
    for method in ("cutout", "keep_cutout"):
        cfg = load_config(ClsConfig, CONFIG, [*overrides, f"aug.method={method}",
                                              f"train.output_dir=outputs/demo/{method}"])
        print(f"== {method}: {cfg.model.name} width {cfg.model.kwargs.get('width')}, {cfg.train.epochs} epochs "
              f"on the embedded sample ({cfg.train.device})", flush=True)
        t0 = time.perf_counter()
        trainers[method] = Trainer(cfg)
        metrics = trainers[method].fit(overwrite=True)
        results[method] = (metrics["val_top1"], metrics["val_top5"], time.perf_counter() - t0)
    print("\nmethod        test top-1   test top-5   train time")
    for method, (top1, top5, secs) in results.items():
        print(f"{method:<13} {top1:9.1f} %  {top5:9.1f} %  {secs:8.0f} s")
    print("\nOne seed on 2,500 images: runs of the same arm with other seeds differ by a few points, so this gap is "
          "noise,\nnot the paper's result (README: tools/bench_cifar.py compares over seeds).")
    images, labels, _ = load_sample("test")
    picked = visualize.pick_images(images, labels, 8)
    out = Path("outputs/demo/figure1.png")
    visualize.make_figure(trainers["keep_cutout"].backbone.eval(), *picked).save(out)
    print(f"\nwrote {out} (the KeepCutout model's saliency; red = cut region, green = pasted region)")


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(f"usage: make demo [ARGS=\"key=value ...\"]  (python tools/demo.py [key=value ...])\n\n{__doc__}")
        sys.exit(0)
    main(sys.argv[1:])
