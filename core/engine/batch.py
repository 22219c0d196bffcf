"""The typed batch every training loader yields (DataLoader workers and device-resident loaders alike),
and the collate function that builds it from dataset items."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FIELDS = ("images", "labels", "indices", "clean", "weak")


@dataclass
class Batch:
    """One step's images as uint8 ``(B, C, H, W)`` (on the CPU from workers, on the device from a
    device-resident loader); normalisation happens in the trainer, on the device.

    Attributes:
        images: the view trained on (after the image policy, if any).
        labels: ``(B,)`` int64 class / identity labels; None for unlabelled images (never read).
        indices: ``(B,)`` int64 dataset positions of the images.
        clean: the same images before the image policy, under the same crop and flip (the paste's source).
        weak: UDA's clean view with its own crop and flip (the consistency target).
        skipped: files of this batch that could not be read and were dropped (``data.skip_corrupt``).
        unlabelled: UDA: the unlabelled half of the step, a :class:`Batch` of its own.
    """

    images: torch.Tensor | None
    labels: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    clean: torch.Tensor | None = None
    weak: torch.Tensor | None = None
    skipped: list[str] = field(default_factory=list)
    unlabelled: Batch | None = None

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    @property
    def empty(self) -> bool:
        """Every image of the batch was unreadable and skipped."""
        return self.images is None


class Corrupt:
    """Returned by a dataset in place of an unreadable item when ``data.skip_corrupt`` is on; the collate
    function drops it and reports its file."""

    def __init__(self, err: OSError) -> None:
        self.path = getattr(err, "path", str(err))


class Collate:
    """Stack dataset items (tuples) into a :class:`Batch`, naming each tuple position by a :data:`FIELDS`
    entry (None: dropped); :class:`Corrupt` items are dropped and their files listed in ``skipped``.
    A class, not a closure, so DataLoader workers can pickle it."""

    def __init__(self, fields: tuple[str | None, ...]) -> None:
        unknown = [f for f in fields if f is not None and f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown batch field(s) {unknown}; a Batch has {', '.join(FIELDS)}")
        self.fields = fields

    def __call__(self, items: list) -> Batch:
        good = [it for it in items if not isinstance(it, Corrupt)]
        skipped = [it.path for it in items if isinstance(it, Corrupt)]
        if not good:
            return Batch(None, skipped=skipped)
        if len(good[0]) != len(self.fields):
            raise ValueError(f"dataset items have {len(good[0])} parts, the collate expects {self.fields}")
        cols = {name: torch.stack(col) if isinstance(col[0], torch.Tensor) else torch.tensor(col)
                for name, col in zip(self.fields, zip(*good)) if name is not None}
        return Batch(**cols, skipped=skipped)
