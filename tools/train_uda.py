"""Semi-supervised UDA on CIFAR-10 with RandAugment or KeepRandAugment (KeepAugment Table 7).

    python tools/train_uda.py classification/configs/uda/wrn28_2_4000_keep_randaugment.yaml data.root=/data/cifar10
    torchrun --nproc_per_node 4 tools/train_uda.py CONFIG [key=value ...] [--resume]
"""

from __future__ import annotations

import argparse
import json
import sys

from classification.config import ConfigError, load_config
from classification.uda import SemiConfig, UDATrainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides")
    ap.add_argument("--resume", action="store_true", help="continue from <output_dir>/last.pt")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(SemiConfig, args.config, args.overrides)
    except (ConfigError, ValueError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    trainer = UDATrainer(cfg)
    metrics = trainer.fit(resume=args.resume)
    if trainer.info.is_main:
        print(json.dumps({"step": trainer.step, **metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
