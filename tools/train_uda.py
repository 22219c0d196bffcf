"""Semi-supervised UDA on CIFAR-10 with RandAugment or KeepRandAugment (KeepAugment Table 7).

    python tools/train_uda.py classification/configs/uda/wrn28_2_4000_keep_randaugment.yaml data.root=/data/cifar10
    torchrun --nproc_per_node 4 tools/train_uda.py CONFIG [key=value ...] [--resume]
"""

from __future__ import annotations

import argparse
import sys

from classification.uda import SemiConfig, UDATrainer
from tools.cli_common import add_run_flags, fit_and_report, load_or_report, one_line_errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides")
    add_run_flags(ap)
    args = ap.parse_args(argv)
    cfg = load_or_report(SemiConfig, args.config, args.overrides, errors=(ValueError,), args=args)  # ConfigError is one
    if cfg is None:
        return 2
    return one_line_errors(lambda: fit_and_report(UDATrainer(cfg), args, counter="step"), args)


if __name__ == "__main__":
    sys.exit(main())
