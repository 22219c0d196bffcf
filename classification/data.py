"""Datasets and loaders: CIFAR-10 (torchvision format or ImageFolder layout), ImageFolder (ImageNet),
and the embedded sample. Items are uint8 tensors; normalisation happens on the device.

A train item is ``(image, label, index)`` or, for paste methods, ``(clean, augmented, label, index)``
where both views share the random crop and flip; every loader yields :class:`core.engine.batch.Batch`.
An unreadable image raises an error naming the file, or, with ``data.skip_corrupt``, is dropped from its
batch and counted.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import datasets
from torchvision import transforms as T

from core.engine.batch import Batch, Collate, Corrupt
from core.engine.seeding import EpochSeeded, WithEpoch
from core.engine.workers import worker_message

from .augment import image_transform
from .device_data import DeviceLoader, decode_all
from .sample import SAMPLE, load_image_archive
from .schema import device_loader_blocker


class UnreadableImage(OSError):
    """An image file that cannot be decoded; ``path`` names it.

    Also built from one string: a DataLoader worker's exception comes back to the main process as
    ``type(err)(message)``, the message being the worker's whole traceback (torch re-raises a
    ``RuntimeError`` for a type that cannot be built that way); the original one-line message is kept.
    """

    def __init__(self, path: str, err: Exception | None = None) -> None:
        if err is None:  # re-raised from a worker: the traceback ends with "...UnreadableImage: <message>"
            path = worker_message(path) or path  # names the file (the worker's Corrupt marker carries the bare path)
            super().__init__(path)
        else:
            super().__init__(f"cannot read image {path}: {err} (data.skip_corrupt=true skips unreadable images)")
        self.path = path


class _Images(Dataset):
    """Labelled images (subclasses set ``labels`` and define ``load_image(i)``: the image alone, no label read)."""

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> tuple[Image.Image, int]:
        return self.load_image(i), self.labels[i]


class ArrayImages(_Images):
    """In-memory ``(N, H, W, 3)`` uint8 images and labels (CIFAR-10 torchvision format, the sample)."""

    def __init__(self, images: np.ndarray, labels, classes: list[str]) -> None:
        self.images, self.labels, self.classes = images, list(map(int, labels)), classes

    def load_image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


class FolderImages(_Images):
    """ImageFolder layout ``<root>/<class>/<image>``; unreadable files raise naming the file."""

    def __init__(self, root: Path) -> None:
        self.folder = datasets.ImageFolder(str(root), loader=lambda p: p)
        self.classes = self.folder.classes
        self.labels = [y for _, y in self.folder.samples]

    def load_image(self, i: int) -> Image.Image:
        path = self.folder.samples[i][0]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as err:  # noqa: BLE001 - re-raised with the file name
            raise UnreadableImage(path, err) from err


def _cifar_torchvision(root: Path, train: bool, download: bool) -> ArrayImages:
    try:
        ds = datasets.CIFAR10(str(root), train=train, download=download)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"CIFAR-10 not found under {root}: expected torchvision's cifar-10-batches-py/ there, or the ImageFolder "
            f"layout {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg; set data.download=true to download "
            f"it (needs internet) ({err})") from err
    except OSError as err:  # URLError and friends
        raise ConnectionError(f"downloading CIFAR-10 to {root} failed (offline?): {err}. Download it elsewhere and "
                              f"copy cifar-10-batches-py/ into {root}") from err
    return ArrayImages(ds.data, ds.targets, ds.classes)


def base_dataset(data_cfg, split: str):
    """The raw split (PIL images + labels) chosen by ``data.dataset`` and ``data.root``."""
    root = Path(data_cfg.root)
    if data_cfg.dataset == "sample":
        x, y, classes = load_image_archive(data_cfg.root or SAMPLE, split)
        return ArrayImages(x.permute(0, 2, 3, 1).numpy(), y.tolist(), classes)
    if not data_cfg.root or not root.is_dir():
        if data_cfg.dataset == "cifar10" and data_cfg.download and data_cfg.root:
            return _cifar_torchvision(root, split == data_cfg.train_split, True)
        raise FileNotFoundError(f"data.root {str(root)!r} is not a directory; expected {_layout(data_cfg)}")
    if (root / split).is_dir():
        return FolderImages(root / split)
    if data_cfg.dataset == "cifar10":
        return _cifar_torchvision(root, split == data_cfg.train_split, data_cfg.download)
    raise FileNotFoundError(f"{root / split} does not exist; expected {_layout(data_cfg)}")


def _layout(data_cfg) -> str:
    if data_cfg.dataset == "cifar10":
        return ("torchvision's cifar-10-batches-py/ or train/<class>/*.jpg + test/<class>/*.jpg "
                "(set data.download=true to fetch it)")
    return f"{data_cfg.train_split}/<class>/<image> and {data_cfg.val_split}/<class>/<image>"


class Lighting:
    """AlexNet-style PCA lighting noise (CutMix-PyTorch ``utils.Lighting``, alphastd 0.1) on uint8 ``(3, H, W)``."""

    EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
    EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])

    def __init__(self, alphastd: float = 0.1) -> None:
        self.alphastd = alphastd

    def __call__(self, view: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.alphastd
        shift = (self.EIGVEC * alpha * self.EIGVAL).sum(1).view(3, 1, 1) * 255
        return (view.float() + shift).round().clamp(0, 255).to(torch.uint8)


class _View(Dataset):
    """A transformed view of a base dataset: item ``i`` is ``self.item(image, label, i)``, or a :class:`Corrupt`
    marker for an unreadable image if ``skip_corrupt``."""

    def __init__(self, base, data_cfg) -> None:
        self.base, self.skip = base, data_cfg.skip_corrupt

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        try:
            img, label = self.base.load(i)
        except OSError as err:
            if self.skip:
                return Corrupt(err)
            raise
        return self.item(img, label, i)


def same_draws(transform, *images):
    """``transform`` applied to each of ``images`` with the same random draws (the torch RNG state replayed:
    the same crop and flip for images of one size); the RNG ends as after one application."""
    state = torch.get_rng_state()
    out = []
    for img in images:
        torch.set_rng_state(state)
        out.append(transform(img))
    return out


class TrainView(_View):
    """Crop + flip (+ image-level augmentation) of a base dataset, as uint8 tensors.

    ``geometric`` is the crop and flip; the image policy (``aug.image``) runs after it or on the stored image
    before it (``aug.policy_order``, see :mod:`classification.augment` for the sources). With the paste
    (``aug.plan.pair``) the item is ``(clean, augmented, label, index)`` where clean is the crop / flip of the
    image and nothing else, and the augmented view has the same crop and flip, so a box means the same pixels
    in both. ImageNet-style data add ColorJitter (``aug.color_jitter``) and PCA lighting (``aug.lighting``) to
    the view trained on, after the policy; they are not part of the clean image.
    """

    def __init__(self, base, data_cfg, aug_cfg) -> None:
        super().__init__(base, data_cfg)
        size, imagenet = data_cfg.image_size, data_cfg.imagenet_style
        crop = T.RandomResizedCrop(size) if imagenet else T.RandomCrop(size, padding=data_cfg.pad)
        self.geometric = T.Compose([crop, T.RandomHorizontalFlip()])
        jitter, alphastd = (aug_cfg.color_jitter, aug_cfg.lighting) if imagenet else (0.0, 0.0)
        self.colour = T.ColorJitter(jitter, jitter, jitter) if jitter else None
        self.lighting = Lighting(alphastd) if alphastd else None
        self.image_op = image_transform(aug_cfg)
        self.before_crop = aug_cfg.policy_order == "before_crop"
        self.pair = aug_cfg.plan.pair
        self.to_tensor = T.PILToTensor()

    def item(self, img: Image.Image, label: int, i: int):
        clean = None
        if self.image_op is None:
            view = self.geometric(img)
        elif self.before_crop:
            augmented = self.image_op(img)
            if self.pair:
                view, clean = same_draws(self.geometric, augmented, img)
            else:
                view = self.geometric(augmented)
        else:
            clean = self.geometric(img)
            view = self.image_op(clean)
        if self.colour is not None:
            view = self.colour(view)
        view = self.to_tensor(view)
        if self.lighting is not None:
            view = self.lighting(view)
        if self.pair:
            return self.to_tensor(clean), view, label, i
        return view, label, i


class EvalView(_View):
    """Deterministic evaluation view: identity (CIFAR) or Resize(size / 0.875) + CenterCrop (ImageNet)."""

    def __init__(self, base, data_cfg) -> None:
        super().__init__(base, data_cfg)
        size = data_cfg.image_size
        ops = [T.Resize(round(size / 0.875)), T.CenterCrop(size)] if data_cfg.imagenet_style else [T.CenterCrop(size)]
        self.transform = T.Compose([*ops, T.PILToTensor()])

    def item(self, img: Image.Image, label: int, i: int):
        return self.transform(img), label, i


EVAL_COLLATE = Collate(("images", "labels", "indices"))
TRAIN_COLLATE = {False: EVAL_COLLATE, True: Collate(("clean", "images", "labels", "indices"))}  # by the pair


def limit(ds: Dataset, n: int) -> Dataset:
    """``n`` evenly spaced items (so a class-sorted set keeps every class); 0 = all."""
    if not n or n >= len(ds):
        return ds
    return Subset(ds, [i * len(ds) // n for i in range(n)])


def build_datasets(cfg):
    """``(train, val, classes)`` for a :class:`~classification.schema.ClsConfig`."""
    train_base = base_dataset(cfg.data, cfg.data.train_split)
    val_base = base_dataset(cfg.data, cfg.data.val_split)
    if len(train_base.classes) != cfg.model.num_classes:
        raise ValueError(f"model.num_classes is {cfg.model.num_classes} but the data has {len(train_base.classes)} "
                         f"classes ({cfg.data.root or cfg.data.dataset})")
    train = limit(TrainView(train_base, cfg.data, cfg.aug), cfg.data.limit_train)
    val = limit(EvalView(val_base, cfg.data), cfg.data.limit_val)
    return train, val, train_base.classes


class WorkerLoader:
    """The DataLoader-worker path: PIL transforms per item, :class:`~core.engine.batch.Batch` batches."""

    def __init__(self, dataset: Dataset, cfg, device: torch.device, info) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if info.is_main and cfg.data.workers * info.world_size > cores:
            print(f"warning: data.workers={cfg.data.workers} x {info.world_size} process(es) on {cores} core(s): "
                  f"the workers will compete with training; data.workers={max(0, cores // info.world_size - 1)} "
                  "fits this machine", flush=True)
        self.sampler = WithEpoch(DistributedSampler(dataset, info.world_size, info.rank, shuffle=True,
                                                    seed=cfg.train.seed, drop_last=info.distributed))
        self.loader = DataLoader(EpochSeeded(dataset, cfg.train.seed), cfg.data.batch_size, sampler=self.sampler,
                                 num_workers=cfg.data.workers, collate_fn=TRAIN_COLLATE[cfg.aug.plan.pair],
                                 pin_memory=device.type == "cuda", persistent_workers=cfg.data.workers > 0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def use_device_loader(cfg, device: torch.device) -> bool:
    """``data.loader``: ``device`` / ``workers`` as asked; ``auto`` = device-resident on CUDA when the config
    allows it (:func:`~classification.schema.device_loader_blocker`), workers otherwise."""
    if cfg.data.loader == "auto":
        return device.type == "cuda" and not device_loader_blocker(cfg)
    return cfg.data.loader == "device"


class DeviceBatches:
    """A :class:`~classification.device_data.DeviceLoader` yielding :class:`~core.engine.batch.Batch` as the
    worker path does (unreadable images were dropped once, when the split was decoded)."""

    def __init__(self, loader: DeviceLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (Batch(images, labels, indices) for images, labels, indices in self.loader)


def device_loader(dataset: Dataset, cfg, device: torch.device, info, train: bool) -> DeviceBatches:
    """The split of ``dataset`` (a train or eval view, possibly limited) decoded once and kept on ``device``."""
    indices = list(range(len(dataset)))
    if isinstance(dataset, Subset):
        indices, dataset = list(dataset.indices), dataset.dataset
    images, labels, names, bad = decode_all(dataset.base, indices, cfg.data.skip_corrupt)
    if bad and info.is_main:
        print(f"data.loader=device: skipped {len(bad)} unreadable image(s): {', '.join(bad[:10])}"
              f"{' ...' if len(bad) > 10 else ''}")
    size = cfg.data.image_size
    if tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"data.loader=device keeps images as stored: they are {tuple(images.shape[2:])} but "
                         f"data.image_size is {size}; use data.loader=workers")
    # train: shuffled and sharded per epoch; eval: every world-th image, in order (as the worker path's Subset shard)
    shard = slice(None) if train else slice(info.rank, None, info.world_size)
    sampling = dict(pad=cfg.data.pad, seed=cfg.train.seed, rank=info.rank, world=info.world_size,
                    drop_last=info.distributed) if train else {}
    return DeviceBatches(DeviceLoader(images[shard].to(device), labels[shard].to(device), cfg.data.batch_size,
                                      train=train, names=names[shard], **sampling))
