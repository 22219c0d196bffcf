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

* labelled set (``uda.split``): ``first`` (default) takes the first ``uda.labels`` training images, as
  ``image/preprocess.py`` ``get_data_by_size_lim`` with ``use_equal_split=False`` ("the same labeled data as in
  AutoAugment"); that order exists in torchvision's CIFAR-10 format, not in a class-sorted ImageFolder layout,
  which ``first`` refuses (an error naming ``uda.split`` when the split is drawn); ``balanced`` draws ``uda.labels /
  classes`` per class at random (``uda.split_seed``). The split is saved as ``split.json`` and reused on resume.

Loss = CE(labelled) (optionally with TSA) + ``uda.coeff`` * UDA consistency (see :mod:`classification.semi`).
With ``aug.method=keep_randaugment`` the strong view gets a high-saliency region of a clean image pasted
back, the saliency taken from the **max logit** (no labels) of the model being trained. As the clean view
has its own crop, the paste's source is a third view: the clean image under the strong view's flip and crop
(replayed from the same random draws), so the pasted pixels land where they belong; the consistency target
is still the independent clean view. The paste goes **before** UDA's final Cutout, as on CIFAR the paste
comes before the region op: the Cutout is applied in the loader (on the stored image, then cropped and
flipped with it), but the strong view carries its box as an alpha channel (0 = cut,
:meth:`~classification.uda_randaugment.UDARandAugment.marked`), and after the paste those pixels are set back
to the strong view's own (the Cutout's fill), so the paste cannot undo the Cutout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import transforms as T

from core.engine.batch import Batch, Collate, Corrupt
from core.engine.seeding import EpochSeeded
from core.engine.trainer import StepStats

from .data import EVAL_COLLATE, EvalView, TrainView, base_dataset, limit, same_draws
from .engine import Trainer
from .schema import ClsConfig
from .semi import (
    SPLITS,
    first_split,
    labelled_split,
    load_split,
    save_split,
    supervised_loss,
    tsa_threshold,
    uda_consistency,
)
from .uda_randaugment import UDARandAugment

STRONG_OPS = ("uda_randaugment", "randaugment")
UNLABELLED_COLLATE = {False: Collate(("weak", "images", "indices")),  # by the pair (keep paste)
                      True: Collate(("weak", "images", "clean", "indices"))}


@dataclass
class UDAConfig:
    labels: int = 4000  # labelled images
    # first: the first `labels` training images (UDA image/preprocess.py, use_equal_split=False; needs the
    # original CIFAR-10 order) | balanced: labels / classes per class, drawn with split_seed
    split: str = "first"
    split_seed: int = 0  # uda.split=balanced
    unsup_ratio: int = 5  # unlabelled batch = unsup_ratio x data.batch_size
    temperature: float = 0.4  # sharpening of the clean prediction (<= 0: off)
    threshold: float = 0.8  # confidence mask on the clean prediction (< 0: off)
    coeff: float = 1.0
    tsa: str = ""  # "" | linear_schedule | exp_schedule | log_schedule
    unlabelled: str = "all"  # all (UDA: the whole training set, labelled images included) | rest (the others)


@dataclass
class SemiConfig(ClsConfig):
    uda: UDAConfig = field(default_factory=UDAConfig)

    def validate(self) -> None:
        super().validate()
        p = self.aug.plan
        if p.image_op not in STRONG_OPS or p.region_op is not None:
            raise ValueError(f"UDA needs aug.image=uda_randaugment (UDA's) or randaugment (torchvision's) and no "
                             f"region op (aug.method randaugment or keep_randaugment), got aug.method="
                             f"{self.aug.method!r}, image {p.image_op}, region {p.region_op}")
        if p.keep_paste and self.aug.saliency_target != "max_logit":
            raise ValueError("aug.saliency_target must be max_logit for UDA: unlabelled images have no label")
        if self.uda.unlabelled not in ("all", "rest"):
            raise ValueError(f"uda.unlabelled must be all or rest, got {self.uda.unlabelled!r}")
        if self.uda.split not in SPLITS:
            raise ValueError(f"uda.split must be one of {', '.join(SPLITS)}, got {self.uda.split!r}")


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
    paste (``view.pair``) also crop/flip'(image): the clean image under the strong view's draws, replayed.
    With a paste and UDA's RandAugment the strong view is RGBA, alpha 0 on the final Cutout's box (moved by
    the same crop/flip): the trainer applies that Cutout after the paste."""

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
        marked = v.pair and isinstance(v.image_op, UDARandAugment) and v.image_op.cutout > 0
        augmented = v.image_op.marked(img) if marked else v.image_op(img)
        views = [clean, *same_draws(v.geometric, augmented, img)] if v.pair else [clean, v.geometric(augmented)]
        return (*map(v.to_tensor, views), i)


class StepSampler(Sampler[int]):
    """Infinite index stream from ``start_step`` on: pass k is a seeded permutation of the dataset, each
    rank takes every world-th index of it, batches are consecutive. Restart-exact: the stream for a step
    depends only on (seed, step). Yields ``(index, stream position)`` for
    :class:`~core.engine.seeding.EpochSeeded`, so each image's augmentation is seeded by its position."""

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
    unit_name = "round"
    stat_names = ("loss", "sup_loss", "unsup_loss", "mask_rate", "hits", "labelled")

    def __init__(self, cfg, hooks: tuple = ()) -> None:
        super().__init__(cfg, hooks)
        # UDA's step reads the step count (TSA) and mixes three views: model.compile compiles its forward only
        self.forward = torch.compile(self.model, backend=cfg.model.compile_backend) if cfg.model.compile else self.model
        self.step_path = "eager step" + (" (model.compile: the forward compiled)" if cfg.model.compile else "")

    def step_blockers(self) -> list[str]:
        reasons = super().step_blockers()
        if self.cfg.uda.tsa:
            reasons.append(f"uda.tsa={self.cfg.uda.tsa}: its threshold follows the step count, read on the host")
        return reasons

    def build_data(self) -> int:
        cfg = self.cfg
        base = base_dataset(cfg.data, cfg.data.train_split)
        split_file = self.out / "split.json"
        if split_file.is_file():
            labelled = load_split(split_file)
        elif cfg.uda.split == "first":  # UDA's: the first uda.labels images (refused on class-sorted data)
            labelled, _ = first_split(base.labels, cfg.uda.labels)
        else:
            labelled, _ = labelled_split(base.labels, cfg.uda.labels, cfg.model.num_classes, cfg.uda.split_seed)
        chosen = set(labelled)
        # UDA (image/preprocess.py): the unlabelled set is the whole training set, labelled images included
        unlabelled = [i for i in range(len(base)) if cfg.uda.unlabelled == "all" or i not in chosen]
        if self.info.is_main and not split_file.is_file():
            self.out.mkdir(parents=True, exist_ok=True)
            save_split(split_file, labelled, unlabelled, cfg.uda.split_seed, cfg.uda.split)
        sup_aug = replace(cfg.aug, method="none", image="", region="", keep_cut=None, keep_paste=None)
        self.labelled_set = Subset(uda_geometric(TrainView(base, cfg.data, sup_aug), cfg.data), labelled)
        self.unlabelled_set = UnlabelledView(uda_geometric(TrainView(base, cfg.data, cfg.aug), cfg.data), unlabelled)
        self.train_set = self.labelled_set
        val_base = base_dataset(cfg.data, cfg.data.val_split)
        self.val_set, self.classes = limit(EvalView(val_base, cfg.data), cfg.data.limit_val), val_base.classes
        self.val_loader = self.worker_val_loader()
        if not cfg.train.max_steps_per_epoch:
            raise ValueError("train.max_steps_per_epoch sets the UDA round length (steps between evaluations)")
        return cfg.train.max_steps_per_epoch

    def train_batches(self):
        """The round's steps from the two infinite streams (restart-exact from ``self.step``): a labelled
        :class:`Batch` whose ``unlabelled`` is the step's unlabelled one."""
        cfg, b, seed = self.cfg, self.cfg.data.batch_size, self.cfg.train.seed

        def stream(ds, batch: int, collate, s: int) -> DataLoader:
            return DataLoader(EpochSeeded(ds, s), batch, num_workers=cfg.data.workers, collate_fn=collate,
                              pin_memory=self.device.type == "cuda",
                              sampler=StepSampler(len(ds), batch, self.info.rank, self.info.world_size, s, self.step))

        sup = stream(self.labelled_set, b, EVAL_COLLATE, seed)
        unsup = stream(self.unlabelled_set, b * cfg.uda.unsup_ratio, UNLABELLED_COLLATE[self.unlabelled_set.view.pair],
                       seed + 1)
        for labelled, unlabelled in zip(sup, unsup):
            skipped = labelled.skipped + unlabelled.skipped
            if labelled.empty or unlabelled.empty:
                yield Batch(None, skipped=skipped)
            else:
                yield replace(labelled, skipped=skipped, unlabelled=unlabelled)

    def run_step(self, batch: Batch) -> StepStats:
        cfg, unl = self.cfg, batch.unlabelled
        x_l, y = self.normalize(batch.images), self.to_device(batch.labels)
        clean, strong = self.normalize(unl.weak), self.to_device(unl.images)
        # RGBA: alpha 0 marks UDA's final Cutout, to be applied after the paste
        final_cut = strong[:, 3:] == 0 if strong.shape[1] == 4 else None
        strong = self.normalize(strong[:, :3])
        if self.keep is not None:  # saliency (max logit) and paste from the clean image under the strong crop/flip
            source = self.normalize(unl.clean)
            with self.autocast():
                pasted = self.keep(self.backbone, source, None, x_aug=strong, generator=self.generator).x
            # the paste comes before UDA's final Cutout: inside the Cutout the strong view's own (filled) pixels
            strong = pasted if final_cut is None else torch.where(final_cut, strong, pasted)
        total = cfg.train.epochs * self.steps_per_epoch
        with self.autocast():
            logits, _ = self.forward(torch.cat([x_l, clean, strong]))
            n_l, n_u = len(x_l), len(clean)
            sup = supervised_loss(logits[:n_l], y, tsa_threshold(cfg.uda.tsa, self.step, total, cfg.model.num_classes))
            cons, mask_rate = uda_consistency(logits[n_l:n_l + n_u], logits[n_l + n_u:], cfg.uda.temperature,
                                              cfg.uda.threshold)
            loss = sup + cfg.uda.coeff * cons
        self.optimizer_step(loss)
        hits = (logits[:n_l].argmax(1) == y).sum().float()
        loss = loss.detach()
        return StepStats(loss, torch.stack([loss, sup.detach(), cons.detach(), mask_rate, hits,
                                            torch.full_like(hits, n_l)]))

    def epoch_metrics(self, sums: list[float], steps: int, seconds: float, skipped: int) -> dict:
        w, n = self.info.world_size, max(1, steps)
        loss, sup, cons, mask, hits, count = (v / w for v in sums)
        return {"train_loss": loss / n, "sup_loss": sup / n, "unsup_loss": cons / n, "mask_rate": mask / n,
                "train_top1": 100 * hits / max(count, 1), "lr": self.current_lr(),
                "img_s": n * self.cfg.data.batch_size * (1 + 2 * self.cfg.uda.unsup_ratio) / seconds,
                "seconds": seconds}

    def progress_postfix(self, sums: list[float], steps: int, seconds: float) -> dict:
        avg = [v / max(steps, 1) for v in sums]
        return {"loss": f"{avg[0]:.3f}", "sup": f"{avg[1]:.3f}", "unsup": f"{avg[2]:.3f}", "mask": f"{avg[3]:.2f}"}
