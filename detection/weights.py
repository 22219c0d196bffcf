"""Load a Detectron2 weights file into a model, strictly for the backbone.

Detectron2 only logs missing keys; a converted backbone that silently fails to match (wrong depth,
wrong file) would then train from random initialisation. Here a weights file that is unreadable,
converted from another depth, or leaves any backbone weight (``stem``/``res2``-``res5``) unloaded is an
error that names ``MODEL.WEIGHTS``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer

logger = logging.getLogger(__name__)
BACKBONE_KEY = re.compile(r"(^|\.)(stem|res[2-5])\.")


class WeightsError(ValueError):
    """MODEL.WEIGHTS is missing, unreadable or does not fit the model."""


def read_checkpoint(checkpointer: DetectionCheckpointer, path: str) -> dict:
    local = Path(path)
    if "://" not in path and not local.is_file():
        raise WeightsError(f"MODEL.WEIGHTS={path}: file not found (convert a backbone with tools/convert_det.py)")
    try:
        ckpt = checkpointer._load_file(path)
    except Exception as err:  # noqa: BLE001 - any unpickling/decoding failure means a bad file
        raise WeightsError(f"MODEL.WEIGHTS={path}: cannot read it ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise WeightsError(f"MODEL.WEIGHTS={path}: not a Detectron2 checkpoint (no 'model' dict)")
    return ckpt


def check_depth(ckpt: dict, cfg, path: str) -> None:
    made = ckpt.get("keepaugment", {})
    depth = made.get("depth")
    if depth is not None and "resnet" in cfg.MODEL.BACKBONE.NAME and depth != cfg.MODEL.RESNETS.DEPTH:
        raise WeightsError(f"MODEL.WEIGHTS={path} holds a ResNet-{depth} (converted from {made.get('source')}) but "
                           f"MODEL.RESNETS.DEPTH is {cfg.MODEL.RESNETS.DEPTH}")


def load_weights(model, cfg, path: str | None = None) -> dict:
    """Load ``path`` (default ``cfg.MODEL.WEIGHTS``) into ``model``; returns the incompatible keys."""
    path = cfg.MODEL.WEIGHTS if path is None else path
    checkpointer = DetectionCheckpointer(model)
    ckpt = read_checkpoint(checkpointer, path)
    check_depth(ckpt, cfg, path)
    backbone_only = "__author__" in ckpt or ckpt.get("matching_heuristics", False)
    incompatible = checkpointer._load_model(ckpt)
    missing = [k for k in incompatible.missing_keys if BACKBONE_KEY.search(k)]
    if missing and backbone_only:
        raise WeightsError(f"MODEL.WEIGHTS={path} leaves {len(missing)} backbone weights unloaded, e.g. {missing[:4]}: "
                           "is it a converted ResNet of this depth?")
    checkpointer._log_incompatible_keys(incompatible)
    logger.info("loaded %s: %d missing (new heads), %d unused keys", path, len(incompatible.missing_keys),
                len(incompatible.unexpected_keys))
    return {"missing": incompatible.missing_keys, "unexpected": incompatible.unexpected_keys,
            "missing_backbone": missing}
