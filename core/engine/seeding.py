"""Per-item augmentation seeds: an item's random draws depend only on (seed, epoch, index), so an epoch's
augmentation is the same with any number of DataLoader workers and after any resume."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one item's random draws: a function of (seed, epoch - or any draw counter -, index) only."""
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**63 - 1)


class EpochSeeded(Dataset):
    """Items fetched as ``(index, epoch)``: each item's random crop / flip / AutoAugment draws come from the
    global torch RNG seeded by :func:`item_seed` (and restored afterwards), so an epoch's augmentation does
    not depend on which worker loads an item or on how long the workers have lived (``persistent_workers``):
    a resumed run sees exactly the images of an uninterrupted one."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed(self.seed, epoch, index))
            return self.dataset[index]


class WithEpoch(torch.utils.data.Sampler):
    """Any sampler with ``set_epoch`` / ``epoch`` (DistributedSampler, re-ID's P x K sampler) yielding
    ``(index, epoch)`` for :class:`EpochSeeded`."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return ((i, self.sampler.epoch) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
