"""KeepAugment backbones in Detectron2: conversion, configs, timm backbones, training and COCO evaluation.

Importing this package applies what a Python-only detectron2 lacks (:mod:`detection.compat`) and
registers the timm backbones in Detectron2's ``BACKBONE_REGISTRY``.
"""

from . import compat

with compat.dependency_import_warnings():  # fvcore / detectron2 import-time deprecation notices
    try:
        compat.apply()
    except ImportError as err:  # detectron2 is not installed
        raise ImportError(f"detection needs detectron2 ({err}): run `python tools/install_detectron2.py` "
                          "(make test and make demo do)") from err

    from . import timm_backbone  # noqa: E402  (registers build_timm_*backbone; imports detectron2.modeling)
from .config import load_config  # noqa: E402
from .convert import ConversionError, convert  # noqa: E402

__all__ = ["ConversionError", "compat", "convert", "load_config", "timm_backbone"]
