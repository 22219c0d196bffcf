"""Export the backbone of a training checkpoint: weights in torchvision naming (no early head, no
classifier unless asked) plus a JSON file with their provenance. The input of `detection` and `reid`."""

from __future__ import annotations

import json
from pathlib import Path

from core.engine.checkpoint import atomic_save, load_checkpoint


def classifier_prefix(model_name: str) -> str:
    """Parameter prefix of the classifier: ``fc.`` for our networks and torchvision ResNets, timm's
    ``pretrained_cfg['classifier']`` for timm models."""
    if model_name.startswith("timm:"):
        import timm

        return timm.create_model(model_name[5:], pretrained=False).pretrained_cfg.get("classifier", "head") + "."
    return "fc."


def export_backbone(checkpoint: str | Path, out: str | Path, with_classifier: bool = False) -> dict:
    """Write ``out`` (a plain state dict) and ``out`` with suffix ``.json``; returns the provenance."""
    ckpt = load_checkpoint(checkpoint)
    if "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{checkpoint} is not a training checkpoint of classification (no 'model'/'config')")
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    prefix = classifier_prefix(ckpt["model_name"])
    dropped = [] if with_classifier else [k for k in state if k.startswith(prefix)]
    state = {k: v for k, v in state.items() if k not in dropped}
    atomic_save(state, out)
    info = {"source_checkpoint": str(checkpoint), "model": ckpt["model_name"], "epochs": ckpt["epoch"],
            "best_val_top1": ckpt["best_top1"], "with_classifier": with_classifier, "dropped_keys": dropped,
            "num_tensors": len(state), "config": ckpt["config"]}
    Path(out).with_suffix(".json").write_text(json.dumps(info, indent=2))
    return {k: v for k, v in info.items() if k != "config"}
