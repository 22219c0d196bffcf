"""Train a classification backbone with a KeepAugment recipe.

    python tools/train_cls.py classification/configs/cifar10/resnet18_keep_cutout.yaml data.root=/data/cifar10
    torchrun --nproc_per_node 8 tools/train_cls.py CONFIG [key=value ...] [--resume]
    python tools/train_cls.py --eval-only --checkpoint runs/x/last.pt [key=value ...]   # the checkpoint's config
    python tools/train_cls.py CONFIG --eval-only --checkpoint runs/x/last.pt
    python tools/train_cls.py --export runs/x/last.pt --out backbone.pth [--with-classifier]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from classification.engine import Trainer
from classification.export import export_backbone
from classification.schema import ClsConfig
from tools.cli_common import add_run_flags, fit_and_report, one_line_errors, run_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("config", nargs="?", help="YAML config (see classification/configs)")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides")
    add_run_flags(ap)
    ap.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint and print JSON")
    ap.add_argument("--checkpoint", help="checkpoint for --eval-only")
    ap.add_argument("--export", metavar="CKPT", help="export the backbone of a training checkpoint")
    ap.add_argument("--out", help="output path of --export")
    ap.add_argument("--with-classifier", action="store_true", help="keep the classifier in the export")
    args = ap.parse_intermixed_args(argv)  # flags anywhere among config and overrides
    if args.export:
        if not args.out:
            ap.error("--export needs --out")
        info = one_line_errors(lambda: export_backbone(args.export, args.out, args.with_classifier), args)
        if isinstance(info, int):
            return info
        print(json.dumps(info, indent=2))
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}", file=sys.stderr)
        return 0
    return run_config(ap, args, ClsConfig, run)


def run(cfg, args) -> int:
    trainer = Trainer(cfg)
    if args.eval_only:
        trainer.load_weights(args.checkpoint)
        print(json.dumps(trainer.evaluate()))
        return 0
    return fit_and_report(trainer, args)


if __name__ == "__main__":
    sys.exit(main())
