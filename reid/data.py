"""Re-ID image datasets over ``(path, pid, camid)`` lists, uint8 tensors out (normalised on the device).
Train: Resize(256x128) -> flip -> Pad 10 -> RandomCrop (BoT); random erasing is not here: it runs in
the training step on the device, plain or selective."""

from __future__ import annotations

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T


class ReidImages(Dataset):
    def __init__(self, items: list[tuple[str, int, int]], data_cfg, train: bool) -> None:
        self.items = items
        size = (data_cfg.height, data_cfg.width)
        flip_crop = [T.RandomHorizontalFlip(), T.Pad(data_cfg.pad), T.RandomCrop(size)] if train else []
        self.transform = T.Compose([T.Resize(size), *flip_crop, T.PILToTensor()])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, pid, cam = self.items[i]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except Exception as err:  # noqa: BLE001 - re-raised with the file name
            raise OSError(f"cannot read image {path}: {err}") from err
        return self.transform(image), torch.tensor(pid), torch.tensor(cam), torch.tensor(i)
