"""Train / evaluate a Detectron2 detector on a KeepAugment backbone (Detectron2's train_net.py, plus ours).

    python tools/train_det.py --config-file detection/configs/faster_rcnn_R_50_FPN_3x.yaml --num-gpus 8
    python tools/train_det.py --config-file faster_rcnn_R_50_C4_3x.yaml --num-gpus 2 MODEL.WEIGHTS=weights/r50.pkl
    python tools/train_det.py --config-file ... --eval-only MODEL.WEIGHTS=outputs/detection/x/model_final.pth
    python tools/train_det.py --config-file ... --resume                    # continue OUTPUT_DIR's last checkpoint
    python tools/train_det.py --config-file ... --dataset tiny_train ann.json images/ \\
        --dataset tiny_val val.json val/ DATASETS.TRAIN='("tiny_train",)' DATASETS.TEST='("tiny_val",)'

Config names are resolved in ``detection/configs`` too. Overrides are ``KEY=value`` (or Detectron2's
``KEY value``). COCO 2017 is read from ``$DETECTRON2_DATASETS/coco`` (Detectron2's builtin names).
Several machines: ``--num-machines N --machine-rank R --dist-url tcp://HOST:PORT`` on each.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import torch
from torch.multiprocessing import ProcessRaisedException

# isort: off
import detection  # noqa: F401  (first: compat shims for a Python-only detectron2, timm backbones)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

# isort: on
from core.engine.config import ConfigError
from detection.config import find_config, load_config
from detection.data import DatasetError, check_datasets, register_coco_json
from detection.engine import Trainer
from detection.weights import WeightsError, load_weights, require_weights_file


def build_parser():
    parser = default_argument_parser(__doc__)
    parser.add_argument("--dataset", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_DIR"),
                        help="register a COCO-format dataset (repeatable); name it in DATASETS.TRAIN/TEST")
    return parser


def prepare(args):
    """Datasets registered and checked, config loaded and checked: run in the launching process (so errors
    are reported once and clearly) and again in every worker."""
    for name, json_file, image_root in args.dataset:
        register_coco_json(name, json_file, image_root)
    args.config_file = str(find_config(args.config_file))
    cfg = load_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("MODEL.DEVICE is cuda but no CUDA device is available: add MODEL.DEVICE=cpu")
    check_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if resuming or (args.eval_only and cfg.MODEL.WEIGHTS):
        cfg.MODEL.TIMM.CHECKPOINT = ""  # the full checkpoint holds the timm backbone's weights too
    if cfg.MODEL.WEIGHTS and not resuming:
        require_weights_file(cfg.MODEL.WEIGHTS)
    return cfg


def main(args):
    cfg = prepare(args)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup configures only detectron2's and fvcore's loggers: ours (weights loaded, keys ignored,
    # the timm backbone's unused keys) go to the console and OUTPUT_DIR/log.txt the same way
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detection", abbrev_name="det")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        last = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)  # --resume: OUTPUT_DIR's last checkpoint
        load_weights(model, cfg, last.get_checkpoint_file() if args.resume and last.has_checkpoint() else None)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            # COCOeval's -1 for a metric it cannot compute (no ground truth in an area range or a category) is
            # NaN in Detectron2's results, and NaN is not JSON: the round trip turns every non-finite into null
            safe = json.loads(json.dumps(results), parse_constant=lambda _: None)
            print(json.dumps(safe, indent=2, allow_nan=False))
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_gpus > 1 and args.num_gpus > torch.cuda.device_count():
        print(f"error: --num-gpus {args.num_gpus} but {torch.cuda.device_count()} CUDA devices are visible",
              file=sys.stderr)
        return 2
    try:
        prepare(copy.deepcopy(args))
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (ConfigError, DatasetError, WeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # Detectron2's check for a non-finite loss or box
        print(f"error: {err} Lower SOLVER.BASE_LR or raise SOLVER.WARMUP_ITERS; checkpoints already written to "
              "OUTPUT_DIR are intact.", file=sys.stderr)
        return 1
    except ProcessRaisedException as err:  # a worker of a multi-GPU run failed: its traceback is in err
        print(f"error in a worker process:\n{err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
