"""Convert a torchvision-layout ResNet (ours or anyone's) to a Detectron2 backbone ``.pkl``.

    python tools/convert_det.py runs/imagenet/resnet50_keep_cutmix/last.pt weights/keepcutmix_R_50.pkl --depth 50
    python tools/convert_det.py backbone.pth weights/r101.pkl --depth 101      # an exported backbone
    python tools/convert_det.py timm:resnet50 weights/timm_r50.pkl              # timm's weights (downloads)
    python tools/convert_det.py x101.pth weights/X_101.pkl --depth 101 --num-groups 32 --width-per-group 8

Prints a JSON report (depth, layout, converted count, every key left out). Exit status 2 for a file
that is not a convertible ResNet, or not of ``--depth`` / ``--num-groups`` / ``--width-per-group``
(Detectron2's defaults: 1 group of width 64, a plain ResNet). Inputs are loaded with
``weights_only=True``; ``--trust-pickle`` allows full pickle for files you trust.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="checkpoint/state dict file (.pt/.pth/.pth.tar/.safetensors) or timm:<name>")
    ap.add_argument("output", help="Detectron2 weights file to write (.pkl)")
    ap.add_argument("--depth", type=int, choices=(18, 34, 50, 101, 152),
                    help="expected ResNet depth (the config's MODEL.RESNETS.DEPTH): a mismatch is an error")
    ap.add_argument("--num-groups", type=int, default=1,
                    help="expected groups of the 3x3 convs (MODEL.RESNETS.NUM_GROUPS; 32 for ResNeXt 32x4d/32x8d)")
    ap.add_argument("--width-per-group", type=int, default=64,
                    help="expected width per group (MODEL.RESNETS.WIDTH_PER_GROUP; 4/8 for ResNeXt, 128 for "
                         "Wide ResNet-50-2)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="load an input that needs full pickle (beyond tensors and plain containers, e.g. a "
                         "pickled nn.Module or timm train.py's checkpoint); unpickling can run code: only for "
                         "files you trust")
    args = ap.parse_args(argv)
    if not args.output.endswith(".pkl"):
        ap.error("output must end in .pkl (Detectron2 reads .pkl files with matching heuristics)")
    from detection.convert import ConversionError, convert

    try:
        report = convert(args.input, args.output, depth=args.depth, num_groups=args.num_groups,
                         width_per_group=args.width_per_group, trust_pickle=args.trust_pickle)
    except (ConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    left = report["unconverted"]
    if left:
        print(f"left out {len(left)} keys that are not ResNet backbone weights: "
              f"{', '.join(left[:8])}{' ...' if len(left) > 8 else ''}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
