"""Train / evaluate the BoT re-ID model with plain or selective random erasing.

    python tools/train_reid.py reid/configs/bot_r101_keep.yaml data.root=/data/market1501 model.pretrained=r101.pth
    torchrun --nproc_per_node 4 tools/train_reid.py CONFIG [key=value ...] [--resume]
    python tools/train_reid.py --eval-only --checkpoint runs/reid/x/last.pt [key=value ...] [--out metrics.json]

--eval-only takes the model (and, without a CONFIG, every setting) from the checkpoint's stored config;
key=value overrides win (e.g. data.root=... on another machine, eval.rerank=true).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reid.engine import ReidTrainer
from reid.schema import ReidConfig
from tools.cli_common import add_run_flags, fit_and_report, run_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", help="YAML config (see reid/configs); optional with --eval-only")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides")
    add_run_flags(ap)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--checkpoint", help="checkpoint for --eval-only")
    ap.add_argument("--out", help="JSON file for --eval-only metrics (default <output_dir>/eval.json)")
    args = ap.parse_intermixed_args(argv)  # flags anywhere among config and overrides
    return run_config(ap, args, ReidConfig, run)


def run(cfg, args) -> int:
    trainer = ReidTrainer(cfg)
    if args.eval_only:
        trainer.load_weights(args.checkpoint)
        metrics = trainer.evaluate()
        if trainer.info.is_main:
            out = Path(args.out or trainer.out / "eval.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(metrics, indent=2))
            print(json.dumps(metrics))
        return 0
    return fit_and_report(trainer, args)


if __name__ == "__main__":
    sys.exit(main())
