"""The embedded CIFAR-10 sample (``samples/cifar10-sample.tar.gz``), read straight from the archive."""

from __future__ import annotations

import functools
import io
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "cifar10-sample.tar.gz"
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)  # Cutout reference normalisation
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


@functools.lru_cache(maxsize=4)
def load_image_archive(path: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images of ``<split>/<class>/*.jpg`` in a tar archive as ``(N, 3, H, W)`` uint8, labels ``(N,)``,
    class names (sorted, as ImageFolder). Cached per (path, split): treat the tensors as read-only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image archive not found: {path} (expected a tar with {split}/<class>/*.jpg)")
    items = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if m.isfile() and len(parts) >= 3 and parts[-3] == split:
                try:
                    img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
                except Exception as err:  # noqa: BLE001 - re-raised with the file name
                    raise ValueError(f"cannot read image {m.name} in {path}: {err}") from err
                items.append((parts[-2], m.name, np.asarray(img)))
    if not items:
        raise ValueError(f"{path} has no images under {split}/<class>/")
    items.sort(key=lambda t: t[1])
    classes = sorted({c for c, _, _ in items})
    images = torch.from_numpy(np.stack([a for _, _, a in items])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([classes.index(c) for c, _, _ in items])
    return images, labels, classes


def load_sample(split: str = "train") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The embedded CIFAR-10 sample: 2,500 train / 500 test images."""
    return load_image_archive(SAMPLE, split)


def normalize(x_uint8: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float, normalised per channel."""
    m = torch.tensor(mean, device=x_uint8.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x_uint8.device).view(1, -1, 1, 1)
    return (x_uint8.float() / 255.0 - m) / s
