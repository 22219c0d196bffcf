"""Semi-supervised pieces for UDA (Xie et al., NeurIPS 2020) with KeepRandAugment (KeepAugment Table 7):
the labelled / unlabelled split (UDA's first images, or a class-balanced draw), the consistency loss and
training-signal annealing.

Reference: google-research/uda ``image/main.py`` (the consistency loss, :func:`uda_consistency`, and the TSA
thresholds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

SPLITS = ("first", "balanced")


def first_split(labels: list[int], n_labels: int) -> tuple[list[int], list[int]]:
    """UDA's labelled set (``uda.split=first``): the first ``n_labels`` training images in the stored order, as
    google-research/uda ``image/preprocess.py`` ``get_data_by_size_lim`` with ``use_equal_split=False`` ("use the
    same labeled data as in AutoAugment": ``images[:sup_size]`` of ``data_batch_1`` .. ``data_batch_5``
    concatenated, which is torchvision's ``CIFAR10`` order). Class-sorted data (an ImageFolder layout, where
    that order is lost) are refused: their first images are one or two classes. ``labels`` are read only for
    that check."""
    if not 0 < n_labels <= len(labels):
        raise ValueError(f"uda.labels ({n_labels}) must be in [1, {len(labels)}] (the training set's size)")
    if len(set(labels)) > 1 and all(a <= b for a, b in zip(labels, labels[1:])):
        covered = len(set(labels[:n_labels]))
        raise ValueError(
            f"uda.split=first takes the first {n_labels} training images in their stored order (UDA's labelled set: "
            f"the first 4,000 of CIFAR-10's original order, torchvision's cifar-10-batches-py/), but this training "
            f"set is sorted by class (an ImageFolder layout such as ../shared/data/cifar10-jpeg.tar.gz, where the "
            f"original order is lost): its first {n_labels} images cover {covered} of {len(set(labels))} classes. "
            f"Use torchvision's CIFAR-10 format, or uda.split=balanced (a class-balanced draw chosen by "
            f"uda.split_seed)")
    return list(range(n_labels)), list(range(n_labels, len(labels)))


def labelled_split(labels: list[int], n_labels: int, num_classes: int, seed: int) -> tuple[list[int], list[int]]:
    """``uda.split=balanced``: ``n_labels`` indices balanced over classes (``n_labels / num_classes`` each), drawn
    at random by ``seed``; the unlabelled set is every other index. Both sorted. (UDA's own
    ``use_equal_split=True`` takes the *first* ``n_labels / num_classes`` of each class instead.)"""
    if n_labels % num_classes:
        raise ValueError(f"uda.labels ({n_labels}) must be a multiple of the number of classes ({num_classes})")
    per_class = n_labels // num_classes
    by_class: dict[int, list[int]] = {c: [] for c in range(num_classes)}
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c, members in by_class.items():
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} images, fewer than the {per_class} labels asked")
        chosen += [members[k] for k in torch.randperm(len(members), generator=g)[:per_class].tolist()]
    return sorted(chosen), sorted(set(range(len(labels))) - set(chosen))


def save_split(path: str | Path, labelled: list[int], unlabelled: list[int], seed: int, kind: str = "balanced") -> None:
    Path(path).write_text(json.dumps({"split": kind, "seed": seed, "labelled": labelled,
                                      "num_unlabelled": len(unlabelled)}))


def load_split(path: str | Path) -> list[int]:
    return json.loads(Path(path).read_text())["labelled"]


def uda_consistency(logits_clean: torch.Tensor, logits_strong: torch.Tensor, temperature: float = 0.4,
                    threshold: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """UDA's unsupervised loss and mask rate.

    ``KL(softmax(clean / T) || softmax(strong))`` per unlabelled image, with no gradient through the clean
    branch, zeroed where the clean prediction's top probability is not above ``threshold``, averaged over
    all unlabelled images (as the reference). ``temperature <= 0`` or ``threshold < 0`` disable sharpening /
    masking, like UDA's -1 flags.
    """
    clean = logits_clean.detach().float()
    target_logits = clean / temperature if temperature > 0 else clean
    p = F.softmax(target_logits, dim=-1)
    kl = (p * (F.log_softmax(target_logits, dim=-1) - F.log_softmax(logits_strong.float(), dim=-1))).sum(-1)
    mask = (F.softmax(clean, dim=-1).amax(-1) > threshold).float() if threshold >= 0 else torch.ones_like(kl)
    return (kl * mask).mean(), mask.mean()


def tsa_threshold(schedule: str, step: int, total: int, num_classes: int) -> float:
    """Training-signal annealing threshold, from 1/K to 1 (UDA ``get_tsa_threshold``); 1.0 when off."""
    if not schedule:
        return 1.0
    ratio = min(step / max(total, 1), 1.0)
    coeff = {"linear_schedule": ratio, "exp_schedule": math.exp((ratio - 1) * 5),
             "log_schedule": 1 - math.exp(-ratio * 5)}
    if schedule not in coeff:
        raise ValueError(f"uda.tsa must be '', linear_schedule, exp_schedule or log_schedule, got {schedule!r}")
    start = 1.0 / num_classes
    return coeff[schedule] * (1 - start) + start


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, tsa: float) -> torch.Tensor:
    """Cross-entropy; with TSA (``tsa < 1``) examples whose true-class probability is above ``tsa`` are
    left out, the sum divided by the number kept (at least 1)."""
    loss = F.cross_entropy(logits.float(), target, reduction="none")
    if tsa >= 1.0:
        return loss.mean()
    prob = F.softmax(logits.detach().float(), -1).gather(1, target[:, None]).squeeze(1)
    keep = (prob <= tsa).float()
    return (loss * keep).sum() / keep.sum().clamp_min(1.0)
