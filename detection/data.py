"""Datasets for Detectron2: its builtin COCO names (under ``$DETECTRON2_DATASETS``) or any COCO JSON."""

from __future__ import annotations

import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances


class DatasetError(ValueError):
    """A dataset is unknown or its files are missing."""


def register_coco_json(name: str, json_file: str | Path, image_root: str | Path) -> None:
    """Register a COCO-format instances JSON under ``name`` (idempotent for the same files)."""
    json_file, image_root = Path(json_file), Path(image_root)
    if not json_file.is_file():
        raise DatasetError(f"dataset {name}: annotation file not found: {json_file}")
    if not image_root.is_dir():
        raise DatasetError(f"dataset {name}: image folder not found: {image_root}")
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if Path(getattr(meta, "json_file", "")) == json_file and Path(getattr(meta, "image_root", "")) == image_root:
            return
        raise DatasetError(f"dataset {name} is already registered with other files ({meta.json_file})")
    register_coco_instances(name, {}, str(json_file), str(image_root))


def check_datasets(names) -> None:
    """Every dataset named in the config is registered and its files exist."""
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    for name in names:
        if name not in DatasetCatalog.list():
            raise DatasetError(f"dataset {name!r} is not registered: pass --dataset {name} JSON IMAGE_DIR, "
                               "or use a Detectron2 builtin name such as coco_2017_train")
        meta = MetadataCatalog.get(name)
        for attr, check in (("json_file", Path.is_file), ("image_root", Path.is_dir)):
            path = getattr(meta, attr, None)
            if path is not None and not check(Path(path)):
                hint = (f" (builtin datasets live under $DETECTRON2_DATASETS, now {root!r}: expected "
                        f"{root}/coco/annotations/instances_*.json and {root}/coco/<split>/)"
                        if name.startswith("coco") else "")
                raise DatasetError(f"dataset {name}: {attr} not found: {path}{hint}")
