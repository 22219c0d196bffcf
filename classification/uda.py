"""UDA with RandAugment or KeepRandAugment (KeepAugment Table 7): a :class:`~classification.engine.Trainer`
whose epoch is a round of ``train.max_steps_per_epoch`` steps over two infinite streams, a labelled batch
and ``uda.unsup_ratio`` times as many unlabelled images, each as a (clean, strong) pair.

The data follow google-research/uda (commit 960684e363251772a5938451d4d2bc0f1da9e24b):

* strong view: ``aug.image=uda_randaugment`` is UDA's own RandAugment + Cutout 16
  (:mod:`classification.uda_randaugment`; ``image/preprocess.py`` applies it to the uncropped image);
  ``aug.image=randaugment`` (torchvision's ``RandAugment``) stays available for comparison;
* crop / flip (``image/data.py`` ``get_dataset``: ``flip`` then ``crop``, mapped over every feature whose
  name contains "image"): every view - labelled image, clean unlabelled view, strong view (after its
  augmentation) - gets its **own** random horizontal flip and random ``data.image_size`` crop of the image
  **reflect**-padded by ``data.pad``, so the clean and strong views do not share a crop;
* unlabelled set: ``image/preprocess.py`` ``proc_and_dump_unsup_data(data["train"], ...)`` augments the whole
  training set, the labelled images included; ``uda.unlabelled=all`` (default) does that, ``rest`` keeps only
  the images not in the labelled split.

Loss = CE(labelled) (optionally with TSA) + ``uda.coeff`` * UDA consistency (see :mod:`classification.semi`).
With ``aug.method=keep_randaugment`` the strong view gets a high-saliency region of a clean image pasted
back, the saliency taken from the **max logit** (no labels) of the model being trained. As the clean view
has its own crop, the paste's source is a third view: the clean image under the strong view's flip and crop
(replayed from the same random draws), so the pasted pixels land where they belong; the consistency target
is still the independent clean view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import transforms as T

from .augment import plan
from .data import Corrupt, EpochSeeded, EvalView, TrainView, base_dataset, collate, limit
from .distributed import all_reduce_sum
from .engine import Trainer
from .schema import ClsConfig
from .semi import labelled_split, load_split, save_split, supervised_loss, tsa_threshold, uda_consistency


@dataclass
class UDAConfig:
    labels: int = 4000  # labelled images, balanced over classes
    split_seed: int = 0
    unsup_ratio: int = 5  # unlabelled batch = unsup_ratio x data.batch_size
    temperature: float = 0.4  # sharpening of the clean prediction (<= 0: off)
    threshold: float = 0.8  # confidence mask on the clean prediction (< 0: off)
    coeff: float = 1.0
    tsa: str = ""  # "" | linear_schedule | exp_schedule | log_schedule
    unlabelled: str = "all"  # all (UDA: the whole training set, labelled images included) | rest (the others)


STRONG_OPS = ("uda_randaugment", "randaugment")


@dataclass
class SemiConfig(ClsConfig):
    uda: UDAConfig = field(default_factory=UDAConfig)

    def validate(self) -> None:
        super().validate()
        p = plan(self.aug)
        if p.image_op not in STRONG_OPS or p.region_op is not None:
            raise ValueError(f"UDA needs aug.image=uda_randaugment (UDA's) or randaugment (torchvision's) and no "
                             f"region op (aug.method randaugment or keep_randaugment), got aug.method="
                             f"{self.aug.method!r}, image {p.image_op}, region {p.region_op}")
        if p.keep_paste and self.aug.saliency_target != "max_logit":
            raise ValueError("aug.saliency_target must be max_logit for UDA: unlabelled images have no label")
        if self.uda.unlabelled not in ("all", "rest"):
            raise ValueError(f"uda.unlabelled must be all or rest, got {self.uda.unlabelled!r}")


def uda_geometric(view: TrainView, data_cfg) -> TrainView:
    """``view`` with UDA's crop / flip (``image/data.py``: flip, then a crop of the reflect-padded image);
    ImageNet-style views keep theirs."""
    if not data_cfg.imagenet_style:
        view.geometric = T.Compose([T.RandomHorizontalFlip(),
                                    T.RandomCrop(data_cfg.image_size, padding=data_cfg.pad, padding_mode="reflect")])
    return view


class UnlabelledView(Dataset):
    """Unlabelled images as (clean, strong[, paste source], index); reads the image only, never its label.

    clean = crop/flip(image); strong = crop/flip'(policy(image)), with its own crop/flip draws; with a keep
    paste (``view.pair``) also crop/flip'(image): the clean image under the strong view's draws, replayed."""

    def __init__(self, view: TrainView, indices: list[int]) -> None:
        self.view, self.indices = view, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        try:
            img = self.view.base.load_image(i)
        except OSError as err:
            if self.view.skip:
                return Corrupt(err)
            raise
        v = self.view
        clean = v.geometric(img)
        augmented = v.image_op(img)
        state = torch.get_rng_state()
        views = [v.to_tensor(clean), v.to_tensor(v.geometric(augmented))]
        if v.pair:
            torch.set_rng_state(state)
            views.append(v.to_tensor(v.geometric(img)))
        return (*views, i)


class StepSampler(Sampler[int]):
    """Infinite index stream from ``start_step`` on: pass k is a seeded permutation of the dataset, each
    rank takes every world-th index of it, batches are consecutive. Restart-exact: the stream for a step
    depends only on (seed, step). Yields ``(index, stream position)`` for
    :class:`~classification.data.EpochSeeded`, so each image's augmentation is seeded by its position."""

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int, start_step: int) -> None:
        self.n, self.batch, self.rank, self.world, self.seed, self.start = n, batch, rank, world, seed, start_step
        self.per_rank = n // world
        if self.per_rank < 1:
            raise ValueError(f"{n} images cannot be shared by {world} processes")

    def __iter__(self):
        pos = self.start * self.batch  # position in this rank's stream
        while True:
            k, offset = divmod(pos, self.per_rank)
            g = torch.Generator().manual_seed(self.seed * 100_003 + k)
            mine = torch.randperm(self.n, generator=g)[self.rank::self.world][: self.per_rank].tolist()
            for j, i in enumerate(mine[offset:], start=offset):
                yield i, k * self.per_rank + j
            pos = (k + 1) * self.per_rank


class UDATrainer(Trainer):
    def build_data(self) -> int:
        cfg = self.cfg
        base = base_dataset(cfg.data, cfg.data.train_split)
        split_file = self.out / "split.json"
        if split_file.is_file():
            labelled = load_split(split_file)
        else:
            labelled, _ = labelled_split(base.labels, cfg.uda.labels, cfg.model.num_classes, cfg.uda.split_seed)
        chosen = set(labelled)
        # UDA (image/preprocess.py): the unlabelled set is the whole training set, labelled images included
        unlabelled = [i for i in range(len(base)) if cfg.uda.unlabelled == "all" or i not in chosen]
        if self.info.is_main and not split_file.is_file():
            self.out.mkdir(parents=True, exist_ok=True)
            save_split(split_file, labelled, unlabelled, cfg.uda.split_seed)
        sup_aug = type(cfg.aug)(**{**cfg.aug.__dict__, "method": "none", "image": "", "region": "", "keep_cut": None,
                                   "keep_paste": None})
        self.labelled_set = Subset(uda_geometric(TrainView(base, cfg.data, sup_aug), cfg.data), labelled)
        self.unlabelled_set = UnlabelledView(uda_geometric(TrainView(base, cfg.data, cfg.aug), cfg.data), unlabelled)
        self.train_set = self.labelled_set
        val_base = base_dataset(cfg.data, cfg.data.val_split)
        self.val_set, self.classes = limit(EvalView(val_base, cfg.data), cfg.data.limit_val), val_base.classes
        self.val_loader = self.worker_val_loader()
        if not cfg.train.max_steps_per_epoch:
            raise ValueError("train.max_steps_per_epoch sets the UDA round length (steps between evaluations)")
        return cfg.train.max_steps_per_epoch

    def loaders(self):
        cfg, b = self.cfg, self.cfg.data.batch_size
        w, r, seed = self.info.world_size, self.info.rank, cfg.train.seed
        pin = self.device.type == "cuda"
        sup = DataLoader(EpochSeeded(self.labelled_set, seed), b, num_workers=cfg.data.workers, collate_fn=collate,
                         pin_memory=pin, sampler=StepSampler(len(self.labelled_set), b, r, w, seed, self.step))
        ub = b * cfg.uda.unsup_ratio
        unsup = DataLoader(EpochSeeded(self.unlabelled_set, seed + 1), ub, num_workers=cfg.data.workers,
                           collate_fn=collate, pin_memory=pin,
                           sampler=StepSampler(len(self.unlabelled_set), ub, r, w, seed + 1, self.step))
        return zip(sup, unsup)

    def uda_step(self, labelled: list[torch.Tensor], unlabelled: list[torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        x_l, y = self.normalize(labelled[0]), labelled[1].to(self.device, non_blocking=True)
        clean, strong = self.normalize(unlabelled[0]), self.normalize(unlabelled[1])
        if self.keep is not None:  # saliency (max logit) and paste from the clean image under the strong crop/flip
            source = self.normalize(unlabelled[2])
            with self.autocast():
                strong = self.keep(self.backbone, source, None, x_aug=strong, generator=self.generator).x
        total = cfg.train.epochs * self.steps_per_epoch
        with self.autocast():
            logits, _ = self.forward(torch.cat([x_l, clean, strong]))
            n_l, n_u = len(x_l), len(clean)
            sup = supervised_loss(logits[:n_l], y, tsa_threshold(cfg.uda.tsa, self.step, total, cfg.model.num_classes))
            cons, mask_rate = uda_consistency(logits[n_l:n_l + n_u], logits[n_l + n_u:], cfg.uda.temperature,
                                              cfg.uda.threshold)
            loss = sup + cfg.uda.coeff * cons
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.clip_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        hits = (logits[:n_l].argmax(1) == y).sum().float()
        return torch.stack([loss.detach(), sup.detach(), cons.detach(), mask_rate, hits, torch.full_like(hits, n_l)])

    def train_epoch(self) -> dict:
        self.totals, self.done = torch.zeros(6, device=self.device), 0  # this rank's sums over the round
        self.epoch_start = time.perf_counter()
        self.bar = self.progress_bar("round")
        for i, ((lab, _), (unl, _)) in enumerate(self.loaders()):
            if i >= self.steps_per_epoch:
                break
            stats = self.uda_step(lab, unl)
            self.totals += stats
            self.done += 1
            self.finish_step(stats[0], unl[-1])
            self.bar.update()
        self.check_point()
        self.bar.close()
        n = max(1, self.done)
        loss, sup, cons, mask, hits, count = (all_reduce_sum(self.totals, self.info) / self.info.world_size).tolist()
        seconds = time.perf_counter() - self.epoch_start
        return {"train_loss": loss / n, "sup_loss": sup / n, "unsup_loss": cons / n, "mask_rate": mask / n,
                "train_top1": 100 * hits / max(count, 1), "lr": self.optimizer.param_groups[0]["lr"],
                "img_s": n * self.cfg.data.batch_size * (1 + 2 * self.cfg.uda.unsup_ratio) / seconds,
                "seconds": seconds}

    def refresh_progress(self) -> None:
        if self.bar is None or self.bar.disable or not self.done:
            return
        avg = (self.totals / self.done).tolist()
        self.bar.set_postfix(loss=f"{avg[0]:.3f}", sup=f"{avg[1]:.3f}", unsup=f"{avg[2]:.3f}", mask=f"{avg[3]:.2f}")
