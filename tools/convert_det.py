"""Convert a torchvision-layout ResNet (ours or anyone's) to a Detectron2 backbone ``.pkl``.

    python tools/convert_det.py runs/imagenet/keepcutmix_r50/last.pt weights/keepcutmix_R_50.pkl --depth 50
    python tools/convert_det.py backbone.pth weights/r101.pkl --depth 101      # an exported backbone
    python tools/convert_det.py timm:resnet50 weights/timm_r50.pkl              # timm's weights (downloads)

Prints a JSON report (depth, layout, converted count, every key left out). Exit status 2 for a file
that is not a convertible ResNet, or not of ``--depth``.
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
    args = ap.parse_args(argv)
    if not args.output.endswith(".pkl"):
        ap.error("output must end in .pkl (Detectron2 reads .pkl files with matching heuristics)")
    from detection.convert import ConversionError, convert

    try:
        report = convert(args.input, args.output, depth=args.depth)
    except (ConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    if report["unconverted"]:
        print(f"left out {len(report['unconverted'])} keys that are not ResNet backbone weights: "
              f"{', '.join(report['unconverted'][:8])}{' ...' if len(report['unconverted']) > 8 else ''}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
