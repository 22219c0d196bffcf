"""Device-resident data for datasets that fit in device memory (CIFAR): decode once, keep uint8 on the
device, and make every batch there - no workers, no per-image Python, no host sync per step.

Each epoch's order and augmentation are drawn once, on the CPU, from generators seeded by
``(seed, epoch)`` (the order, exactly as :class:`torch.utils.data.DistributedSampler`) and
``(seed, epoch, rank)`` (crop offsets and flips), and copied to the device in one transfer. So an epoch
depends only on those numbers - never on how many epochs the process has run - and is the same on any
device: a resumed run sees exactly the batches of an uninterrupted one.

The training batch is a random crop with zero padding + horizontal flip, the distribution of
``T.RandomCrop(size, padding=pad)`` + ``T.RandomHorizontalFlip()`` (offsets uniform in
``0..2 * pad``, flip with p = 0.5), done as one gather on the padded batch (as airbench's
``CifarLoader``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

EPOCH_SEED_STRIDE = 1_000_003  # (seed, epoch, rank) -> one generator seed


def decode_all(base, indices: list[int], skip_corrupt: bool, threads: int = 8):
    """``(images (N, C, H, W) uint8, labels (N,) int64, kept indices (N,), unreadable file names)`` of
    ``base[indices]`` on the CPU. In-memory datasets are sliced; image files are decoded with PIL on ``threads`` threads
    (PIL releases the GIL while decoding). An unreadable file raises naming it, unless ``skip_corrupt``."""
    if hasattr(base, "images"):  # ArrayImages: (N, H, W, C) uint8 already
        images = torch.from_numpy(np.ascontiguousarray(base.images[indices])).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor([base.labels[i] for i in indices]), torch.tensor(indices), []

    def read(i: int):
        try:
            return np.asarray(base.load_image(i))
        except OSError as err:
            if skip_corrupt:
                return err
            raise

    with ThreadPoolExecutor(threads) as pool:
        arrays = list(pool.map(read, indices))
    bad = [getattr(a, "path", str(a)) for a in arrays if isinstance(a, OSError)]  # UnreadableImage names its file
    good = [(a, base.labels[i], i) for a, i in zip(arrays, indices) if not isinstance(a, OSError)]
    if not good:
        raise ValueError(f"none of the {len(indices)} images could be read")
    shapes = {a.shape for a, _, _ in good}
    if len(shapes) != 1:
        raise ValueError(f"data.loader=device needs images of one size, found {sorted(shapes)[:4]}; "
                         "use data.loader=workers")
    images = torch.from_numpy(np.stack([a for a, _, _ in good])).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([y for _, y, _ in good]), torch.tensor([i for _, _, i in good]), bad


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int, drop_last: bool, shuffle: bool = True):
    """This rank's indices for ``epoch``: DistributedSampler's contract (``randperm`` from a CPU generator
    seeded ``seed + epoch``; padded by wrapping, or truncated with ``drop_last``; every ``world``-th)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)) if shuffle else torch.arange(n)
    total = n - n % world if drop_last else -(-n // world) * world
    if total > n:
        order = torch.cat([order, order.repeat(-(-(total - n) // n))[: total - n]])
    return order[rank:total:world]


def crop_flip_params(count: int, pad: int, seed: int, epoch: int, rank: int) -> torch.Tensor:
    """``(count, 3)`` int64: row offset, column offset (uniform in ``0..2 * pad``) and flip (0/1) for each
    position of this rank's epoch, from a CPU generator seeded by ``(seed, epoch, rank)``."""
    g = torch.Generator().manual_seed(((seed * EPOCH_SEED_STRIDE + epoch) * 1009 + rank) % (2**63 - 1))
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=g)
    flips = torch.randint(0, 2, (count, 1), generator=g)
    return torch.cat([offsets, flips], dim=1)


def crop_flip(images: torch.Tensor, params: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and optional horizontal flip of a ``(B, C, H, W)`` batch, all
    images at once: ``params`` ``(B, 3)`` = (row offset, column offset, flip) on the images' device."""
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dev = images.device
    rows = params[:, 0:1] + torch.arange(h, device=dev)  # (B, H)
    col = torch.arange(w, device=dev)
    cols = params[:, 1:2] + torch.where(params[:, 2:3].bool(), w - 1 - col, col)  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class DeviceLoader:
    """Batches ``(images uint8 (B, C, H, W), labels (B,), indices (B,))`` from tensors on the device.

    Args:
        images, labels: the whole split on the device.
        batch_size: per process.
        train: shuffle + crop/flip (else the split in order, untouched).
        pad: crop padding (train).
        seed, rank, world, drop_last: as :class:`~torch.utils.data.DistributedSampler`.
        names: the dataset positions of ``images`` (``indices`` refer to them, as the worker path's).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, train: bool, pad: int = 4,
                 seed: int = 0, rank: int = 0, world: int = 1, drop_last: bool = False,
                 names: torch.Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.train, self.pad, self.seed, self.rank, self.world = train, pad, seed, rank, world
        self.drop_last = drop_last
        self.names = names if names is not None else torch.arange(len(labels))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's order (and crops/flips) on the CPU and move them to the device at once."""
        order = epoch_order(len(self.labels), self.seed, epoch, self.rank, self.world, self.drop_last, self.train)
        cols = [order[:, None], self.names[order][:, None]]
        if self.train:
            cols.append(crop_flip_params(len(order), self.pad, self.seed, epoch, self.rank))
        self.plan = torch.cat(cols, dim=1).to(self.images.device)  # the epoch's one transfer (~40 B / image)

    def __len__(self) -> int:
        return -(-len(self.plan) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.plan), self.batch_size):
            rows = self.plan[start:start + self.batch_size]
            x = self.images[rows[:, 0]]
            if self.train:
                x = crop_flip(x, rows[:, 2:], self.pad)
            yield x, self.labels[rows[:, 0]], rows[:, 1]
