"""Load a Detectron2 weights file into a model, strictly for the backbone.

Detectron2 only logs missing keys; a converted backbone that silently fails to match (wrong depth,
wrong file) would then train from random initialisation. Here a weights file that is unreadable,
converted from another depth or groups/width (a ResNeXt or wide ResNet into a plain ResNet config),
or leaves any backbone weight (``stem``/``res2``-``res5``) unloaded (or, for a converted backbone,
unused) is an error that names ``MODEL.WEIGHTS``; so is a file none of whose names a Detectron2
backbone has (an unconverted torchvision / timm / exported state dict: the error says what it looks
like and gives the ``tools/convert_det.py`` command). The two kinds of key Detectron2's own
``convert-torchvision-to-d2.py`` keeps and no ResNet has (``stem.fc.*``, ``*.num_batches_tracked``) are
ignored and reported. Loading goes through ``DetectionCheckpointer.load`` (URLs, ``.pkl`` heuristics,
``.pth``), as Detectron2 itself does.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer

from core.engine.checkpoint import load_error_reason, torch_file_problem

from .convert import LAYOUT_KEYS, convert_command, describe_weights, groups_and_width

logger = logging.getLogger(__name__)
BACKBONE_KEY = re.compile(r"(^|\.)(stem|res[2-5])\.")
CONVERTER_EXTRA_KEY = re.compile(r"(^|\.)stem\.fc\.|(^|\.)num_batches_tracked$")


class WeightsError(ValueError):
    """MODEL.WEIGHTS is missing, unreadable or does not fit the model."""


def check_resnet_layout(ckpt: dict, cfg, path: str) -> None:
    """For a ResNet config: the depth :mod:`detection.convert` recorded must be MODEL.RESNETS.DEPTH, and a
    ResNeXt or wide ResNet needs MODEL.RESNETS.NUM_GROUPS / WIDTH_PER_GROUP to match (read from the first
    3x3 conv, ``res2.0.conv2``, of a backbone file; whole-detector checkpoints are left to the load)."""
    if "resnet" not in cfg.MODEL.BACKBONE.NAME:
        return
    made = ckpt.get("keepaugment", {})
    depth = made.get("depth")
    if depth is not None and depth != cfg.MODEL.RESNETS.DEPTH:
        raise WeightsError(f"MODEL.WEIGHTS={path} holds a ResNet-{depth} (converted from {made.get('source')}) but "
                           f"MODEL.RESNETS.DEPTH is {cfg.MODEL.RESNETS.DEPTH}")
    conv2 = ckpt["model"].get("res2.0.conv2.weight")
    if conv2 is None or len(conv2.shape) != 4 or "res2.0.conv3.weight" not in ckpt["model"]:
        return  # not a bottleneck backbone file (a basic-block ResNet has 1 group of 64 by construction)
    groups, width = groups_and_width(conv2.shape)
    want = cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP
    if (groups, width) != want:
        kind = f"ResNeXt ({groups}x{width}d)" if groups > 1 else f"ResNet of width {width}"
        raise WeightsError(f"MODEL.WEIGHTS={path} holds a {kind}: NUM_GROUPS {groups}, WIDTH_PER_GROUP {width}, "
                           f"but the config builds NUM_GROUPS {want[0]}, WIDTH_PER_GROUP {want[1]}: set "
                           f"MODEL.RESNETS.NUM_GROUPS={groups} MODEL.RESNETS.WIDTH_PER_GROUP={width}")


def is_backbone_key(key: str) -> bool:
    """A weight of the backbone network: a Detectron2 ResNet's ``stem``/``res2``-``res5`` (the C4 head's
    ``res5`` too), or anything under an FPN's ``backbone.bottom_up`` (a timm backbone)."""
    return bool(BACKBONE_KEY.search(key)) or key.startswith("backbone.bottom_up.")


def not_a_detectron2_file(checkpoint: dict, cfg, path: str) -> WeightsError:
    """The error for a file with none of the backbone's weights: what it looks like, and how to convert it."""
    words, layout = describe_weights(checkpoint if "model_name" in checkpoint else checkpoint["model"])
    if layout is not None:
        hint = f"convert it first: {convert_command(path, layout)}, then set MODEL.WEIGHTS to the .pkl"
        wrong = [f"MODEL.RESNETS.{k.upper()}={layout[k]}" for k in LAYOUT_KEYS
                 if cfg.MODEL.RESNETS[k.upper()] != layout[k]]
        if wrong:
            hint += f" and train with {' '.join(wrong)}"
    elif "resnet" in cfg.MODEL.BACKBONE.NAME:
        hint = ("Detectron2's ResNet configs need a ResNet: other models go through the timm backbone "
                "(timm/*.yaml configs, MODEL.TIMM.NAME and MODEL.TIMM.CHECKPOINT; see docs/detection.md)")
    else:
        hint = "a timm backbone takes a classification state dict as MODEL.TIMM.CHECKPOINT, not MODEL.WEIGHTS"
    return WeightsError(f"MODEL.WEIGHTS={path} has none of the backbone's weights (not a Detectron2 checkpoint): "
                        f"it looks like {words}; {hint}")


class StrictBackboneCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose model loading also checks the depth and the backbone keys."""

    def __init__(self, model, cfg, path: str, **kwargs):
        super().__init__(model, **kwargs)
        self.cfg, self.path, self.report = cfg, path, None

    def _load_model(self, checkpoint):
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
            raise WeightsError(f"MODEL.WEIGHTS={self.path}: not a Detectron2 checkpoint (no 'model' dict)")
        check_resnet_layout(checkpoint, self.cfg, self.path)
        backbone_only = "__author__" in checkpoint or checkpoint.get("matching_heuristics", False)
        if not checkpoint.get("matching_heuristics", False):  # names are used as they are: some must fit
            wanted = {k for k in self.model.state_dict() if is_backbone_key(k)}
            have = {k.removeprefix("module.") for k in checkpoint["model"]}
            if wanted and not wanted & have:
                raise not_a_detectron2_file(checkpoint, self.cfg, self.path)
        incompatible = super()._load_model(checkpoint)
        missing = [k for k in incompatible.missing_keys if is_backbone_key(k)]
        unused = [k for k in incompatible.unexpected_keys if BACKBONE_KEY.search(k)]
        ignored = [k for k in unused if CONVERTER_EXTRA_KEY.search(k)]
        unused = [k for k in unused if not CONVERTER_EXTRA_KEY.search(k)]
        if ignored:
            logger.info("MODEL.WEIGHTS=%s: ignored %d keys no Detectron2 ResNet has (the classifier as stem.fc.*, "
                        "BatchNorm's num_batches_tracked; Detectron2's convert-torchvision-to-d2.py keeps them): %s",
                        self.path, len(ignored), ignored[:6])
        if missing or (backbone_only and unused):  # a detector checkpoint must hold its whole backbone too
            raise WeightsError(f"MODEL.WEIGHTS={self.path} leaves {len(missing)} backbone weights unloaded "
                               f"(e.g. {missing[:4]}) and {len(unused)} unused (e.g. {unused[:4]}): is it a converted "
                               "ResNet of this depth, or a detector checkpoint of this config?")
        self.report = {"missing": incompatible.missing_keys, "unexpected": incompatible.unexpected_keys,
                       "missing_backbone": missing, "ignored": ignored}
        return incompatible


def require_weights_file(path: str) -> None:
    """A local weights file must exist (URLs are left to Detectron2's path manager)."""
    if "://" not in path and not Path(path.split("?")[0]).is_file():
        raise WeightsError(f"MODEL.WEIGHTS={path}: file not found (convert a backbone with tools/convert_det.py)")


def load_weights(model, cfg, path: str | None = None) -> dict:
    """Load ``path`` (default ``cfg.MODEL.WEIGHTS``) into ``model``; returns the incompatible keys."""
    path = cfg.MODEL.WEIGHTS if path is None else str(path)
    require_weights_file(path)
    local = path.split("?")[0]
    problem = None
    if "://" not in path:  # a .pkl is a plain pickle (any protocol): only an empty one is refused up front
        problem = torch_file_problem(local) if not local.endswith(".pkl") else \
            ("an empty file (0 bytes)" if Path(local).stat().st_size == 0 else None)
    if problem:
        raise WeightsError(f"MODEL.WEIGHTS={path}: cannot load it: it is {problem} (MODEL.WEIGHTS takes a backbone "
                           "converted by tools/convert_det.py or a detector checkpoint)")
    checkpointer = StrictBackboneCheckpointer(model, cfg, path)
    try:
        checkpointer.load(path, checkpointables=[])
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - any unpickling/decoding failure means a bad file
        raise WeightsError(f"MODEL.WEIGHTS={path}: cannot load it ({load_error_reason(err)})") from err
    logger.info("loaded %s: %d missing (new heads), %d unused keys", path, len(checkpointer.report["missing"]),
                len(checkpointer.report["unexpected"]))
    return checkpointer.report
