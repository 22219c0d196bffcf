"""Detectron2 configs for KeepAugment backbones: model-zoo bases, our keys, ``KEY=value`` overrides.

Our YAML files are Detectron2 configs (yacs ``CfgNode``) with one addition: ``_BASE_`` may be a list,
and an entry ``model_zoo:<path>`` names a config of Detectron2's model zoo (``<path>`` relative to
``detectron2/model_zoo/configs``, e.g. ``model_zoo:COCO-Detection/faster_rcnn_R_50_C4_3x.yaml``),
so our files hold only what differs from the published recipe. Unknown keys and values of the wrong
type are :class:`ConfigError` naming the key and the file (or the override).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from detectron2.config import CfgNode, get_cfg

from core.engine.config import ConfigError, read_yaml_mapping

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MODEL_ZOO_PREFIX = "model_zoo:"


def model_zoo_config_dir() -> Path:
    from .compat import dependency_import_warnings

    with dependency_import_warnings():  # detectron2.model_zoo imports pkg_resources
        import detectron2.model_zoo

    return Path(detectron2.model_zoo.__file__).resolve().parent / "configs"


def add_keepaugment_config(cfg: CfgNode) -> CfgNode:
    """Our keys: the timm backbone (``MODEL.TIMM``)."""
    cfg.MODEL.TIMM = CfgNode()
    cfg.MODEL.TIMM.NAME = "resnet50"  # any timm model that supports features_only
    cfg.MODEL.TIMM.PRETRAINED = False  # timm hub weights (needs internet)
    cfg.MODEL.TIMM.CHECKPOINT = ""  # a classification checkpoint/export of ours, or any timm state dict
    # CHECKPOINT is loaded with torch.load(weights_only=True); True allows full pickle (timm train.py's
    # checkpoints store an argparse.Namespace): only for files you trust, unpickling can run code
    cfg.MODEL.TIMM.TRUST_PICKLE = False
    cfg.MODEL.TIMM.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # named by stride: res2 = 1/4 ... res5 = 1/32
    # leading levels of timm's feature_info to freeze (with everything before them). A ResNet's level 0 is
    # the stride-2 stem, so 2 = stem + res2 as in Detectron2; models whose level 0 is at stride 4
    # (ConvNeXt) freeze through stride 8 with 2.
    cfg.MODEL.TIMM.FREEZE_AT = 0
    cfg.MODEL.TIMM.NORM = "FrozenBN"  # FrozenBN | BN | SyncBN
    return cfg


def resolve_base(entry: str, relative_to: Path) -> Path:
    if entry.startswith(MODEL_ZOO_PREFIX):
        path = model_zoo_config_dir() / entry[len(MODEL_ZOO_PREFIX):]
    else:
        path = (relative_to.parent / entry).resolve()
    if not path.is_file():
        raise ConfigError(f"{relative_to}: _BASE_ {entry!r} not found ({path})")
    return path


def _merge_file(cfg: CfgNode, path: Path, seen: tuple[Path, ...] = ()) -> None:
    path = Path(path).resolve()
    if path.is_relative_to(model_zoo_config_dir()):  # Detectron2's own files (they need its unsafe loader)
        cfg.merge_from_file(str(path), allow_unsafe=True)
        return
    data = read_yaml_mapping(path, seen)
    bases = data.pop("_BASE_", [])
    for base in [bases] if isinstance(bases, str) else bases:
        _merge_file(cfg, resolve_base(base, path), (*seen, path))
    try:
        cfg.merge_from_other_cfg(CfgNode(data))
    except (KeyError, ValueError, TypeError, AssertionError) as err:
        raise ConfigError(f"{path}: {_reason(err)}") from err


def _reason(err: Exception) -> str:
    text = err.args[0] if err.args else str(err)
    if not isinstance(text, str):
        return str(err)
    for yacs_words in ("Non-existent config key", "Non-existent key"):
        text = text.replace(yacs_words, "unknown config key")
    return text


def split_overrides(overrides: Iterable[str]) -> list[str]:
    """``["A.B=1", "C.D", "2"]`` -> ``["A.B", "1", "C.D", "2"]``: accepts ``KEY=value`` and Detectron2's
    ``KEY value`` pairs."""
    flat: list[str] = []
    items = iter(overrides)
    for item in items:
        if item.startswith("--"):
            raise ConfigError(f"{item} goes before the KEY=value overrides on the command line")
        pair = item.split("=", 1) if "=" in item else [item, next(items, None)]
        if pair[1] is None:
            raise ConfigError(f"override {item!r} has no value (write KEY=value)")
        flat += pair
    return flat


def apply_overrides(cfg: CfgNode, overrides: Iterable[str]) -> CfgNode:
    flat = split_overrides(overrides)
    for key, value in zip(flat[::2], flat[1::2]):
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, ValueError, TypeError, AssertionError) as err:
            raise ConfigError(f"override {key}={value}: {_reason(err)}") from err
    return cfg


def find_config(path: str | Path) -> Path:
    """``path`` as given, else relative to ``detection/configs``."""
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (CONFIG_DIR / path).exists():
        return CONFIG_DIR / path
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (nor in {CONFIG_DIR})")
    return path


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> CfgNode:
    """Detectron2 defaults + our keys, then ``path`` (with its bases), then ``overrides``."""
    path = find_config(path)
    cfg = add_keepaugment_config(get_cfg())
    _merge_file(cfg, path)
    return apply_overrides(cfg, overrides)
