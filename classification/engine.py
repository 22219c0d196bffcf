"""The classification trainer: one ``Trainer`` for every classification recipe (CIFAR, ImageNet, any method).

``Trainer(cfg).fit()`` trains with torchrun-style DDP (one process per device; a single process
without torchrun), AMP, the method's device-side KeepAugment step, an optional early head, per-epoch
evaluation, CSV / TensorBoard logs and an atomic checkpoint every epoch; ``resume=True`` continues
exactly from the last one. The loop, checkpoints and hooks (:class:`core.engine.hooks.Hook`) are
:class:`core.engine.trainer.TrainerBase`'s; this module supplies the step, the data and the evaluation.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from core import BackboneWithHead, EarlyHead
from core.engine.batch import Batch
from core.engine.checkpoint import save_on_main
from core.engine.config import to_dict
from core.engine.distributed import all_reduce_sum
from core.engine.trainer import StepStats, TrainerBase

from .augment import batch_augment
from .data import EVAL_COLLATE, WorkerLoader, build_datasets, device_loader, use_device_loader
from .models import create_model, early_hook_point


def lr_lambda(optim_cfg, epochs: int, steps_per_epoch: int):
    """Per-step multiplier: linear warmup, then cosine to 0 or step decay at epoch milestones."""
    warm, total = optim_cfg.warmup_epochs * steps_per_epoch, epochs * steps_per_epoch
    floor = optim_cfg.min_lr_ratio

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if optim_cfg.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        epoch = step // steps_per_epoch
        return optim_cfg.gamma ** sum(epoch >= m for m in optim_cfg.milestones)

    return f


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is in the top-k, for each k, as a float tensor (no host sync)."""
    k_max = min(max(ks), logits.shape[1])
    hit = logits.topk(k_max, dim=1).indices == target[:, None]
    return torch.stack([hit[:, : min(k, k_max)].any(1).sum() for k in ks]).float()


class Trainer(TrainerBase):
    stat_names = ("loss_sum", "hits", "images")

    def __init__(self, cfg, hooks: tuple = ()) -> None:
        super().__init__(cfg, hooks, cfg.model.channels_last)
        self.backbone = create_model(cfg.model.name, cfg.model.num_classes, **cfg.model.kwargs).to(self.device)
        self.head = None
        if cfg.aug.early_head:
            at = cfg.aug.early_head_at or early_hook_point(self.backbone)
            self.head = EarlyHead(self.backbone, at, cfg.model.num_classes, weight=cfg.aug.early_head_weight)
            self.head.to(self.device)
        self.module = BackboneWithHead(self.backbone, self.head)  # one module: DDP synchronises the head too
        if cfg.model.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.generator = self.seed_rank_streams()
        self.keep = batch_augment(cfg.aug, cfg.model.num_classes, self.head)
        self.steps_per_epoch = self.build_data()
        lr = cfg.optim.lr
        if cfg.optim.lr_reference_batch:
            lr *= cfg.data.batch_size * self.info.world_size / cfg.optim.lr_reference_batch
        self.clip_norm = cfg.optim.clip_grad_norm
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=lr, momentum=cfg.optim.momentum,
                                         nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay,
                                         **self.optimizer_options())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.optim, cfg.train.epochs, self.steps_per_epoch))
        self.model = self.distribute(self.module)
        self.losses = self.step_function(self.loss_and_logits, cfg.model.compile, cfg.model.compile_backend)
        self.best_top1 = -1.0  # -1: not evaluated yet

    def step_blockers(self) -> list[str]:
        if self.cfg.model.compile:
            return ["model.compile: torch.compile runs the step (mode reduce-overhead: its own CUDA graphs)"]
        return []

    # -- data --------------------------------------------------------------------------------------
    def build_data(self) -> int:
        """Datasets and the train loader (device-resident or DataLoader workers, ``data.loader``); returns the
        number of steps per epoch."""
        cfg = self.cfg
        self.train_set, self.val_set, self.classes = build_datasets(cfg)
        self.device_data = use_device_loader(cfg, self.device)
        if self.device_data:
            self.loader = device_loader(self.train_set, cfg, self.device, self.info, train=True)
            self.val_loader = device_loader(self.val_set, cfg, self.device, self.info, train=False)
        else:
            self.loader = WorkerLoader(self.train_set, cfg, self.device, self.info)
            self.val_loader = self.worker_val_loader()
        return self.limit_steps(len(self.loader))

    def train_batches(self):
        self.loader.set_epoch(self.epoch)
        return self.loader

    def worker_val_loader(self) -> DataLoader:
        """This rank's share of the validation set (every world-th image) through DataLoader workers."""
        shard = Subset(self.val_set, range(self.info.rank, len(self.val_set), self.info.world_size))
        return DataLoader(shard, self.cfg.data.batch_size, num_workers=self.cfg.data.workers,
                          collate_fn=EVAL_COLLATE)

    # -- the step ----------------------------------------------------------------------------------
    def run_step(self, batch: Batch) -> StepStats:
        """One optimisation step: normalise, KeepAugment on the device, forward (+ early head), loss,
        :meth:`optimizer_step`; returns (loss sum, top-1 hits on the original labels, images)."""
        x, x_aug = self.normalize(batch.images), None
        if batch.clean is not None:  # paste methods: the clean view is the paste's source
            x, x_aug = self.normalize(batch.clean), x
        y = self.to_device(batch.labels)
        loss, logits = self.losses(x, x_aug, y, generator=self.generator)
        self.optimizer_step(loss)
        loss = loss.detach()
        hits = (logits.argmax(1) == y).sum().float()
        n = len(batch)  # full_like: a fill on the device, not a host-to-device copy
        return StepStats(loss, torch.stack([loss.float() * n, hits, torch.full_like(hits, n)]))

    def loss_and_logits(self, x: torch.Tensor, x_aug: torch.Tensor | None, y: torch.Tensor, source):
        """The graph-safe part of the step (compiled whole with ``model.compile``): KeepAugment on the device
        with its draws from ``source``, forward (+ early head), loss -> ``(loss, logits)``."""
        inputs, target = x, y
        if self.keep is not None:
            with self.autocast():
                out = self.keep(self.backbone, x, y, x_aug=x_aug, generator=source)
            inputs, target = out.x, out.target
        with self.autocast():
            logits, aux = self.model(inputs)
            loss = F.cross_entropy(logits.float(), target)
            if aux is not None:
                loss = loss + self.head.weight * F.cross_entropy(aux.float(), target)
        return loss, logits

    def epoch_metrics(self, sums: list[float], steps: int, seconds: float, skipped: int) -> dict:
        loss_sum, hits, n = sums
        return {"train_loss": loss_sum / max(n, 1), "train_top1": 100 * hits / max(n, 1),
                "lr": self.current_lr(), "img_s": n / seconds, "seconds": seconds,
                "skipped": skipped}

    def progress_postfix(self, sums: list[float], steps: int, seconds: float) -> dict:
        loss_sum, hits, n = sums
        return {"loss": f"{loss_sum / max(n, 1):.3f}", "acc": f"{100 * hits / max(n, 1):.1f}",
                "img_s": f"{n / seconds:.0f}"}

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.module.eval()
        stats = torch.zeros(3, device=self.device)  # top1, top5, count
        for batch in self.val_loader:
            if batch.empty:
                continue
            x, y = self.normalize(batch.images), self.to_device(batch.labels)
            with self.autocast():
                logits = self.backbone(x)
            stats[:2] += topk_correct(logits.float(), y)
            stats[2] += len(y)
        self.module.train()
        top1, top5, n = all_reduce_sum(stats, self.info).tolist()
        return {"val_top1": 100 * top1 / max(n, 1), "val_top5": 100 * top5 / max(n, 1)}

    def record_evaluation(self, metrics: dict) -> None:
        if metrics["val_top1"] > self.best_top1:
            self.best_top1 = metrics["val_top1"]
            self.save_best()

    # -- checkpoints -------------------------------------------------------------------------------
    def weights(self) -> dict:
        return {"model": self.backbone.state_dict(), "aux_head": self.head.state_dict() if self.head else None}

    def state(self) -> dict:
        return {**self.weights(), "best_top1": self.best_top1, "model_name": self.cfg.model.name}

    def save_best(self) -> None:
        """``best.pt``: the weights (backbone, early head) of the best validation epoch so far."""
        state = {**self.weights(), "epoch": self.epoch, "val_top1": self.best_top1, "config": to_dict(self.cfg),
                 "model_name": self.cfg.model.name}
        save_on_main(state, self.out / "best.pt", self.info)

    def load_weights(self, path: str | Path, ckpt: dict | None = None) -> dict:
        """The backbone (and early head) of a training checkpoint (``last.pt`` / ``best.pt``) whose model
        config matches this one."""
        ckpt = ckpt or self.load_run_checkpoint(path, only=("model.",))
        self.backbone.load_state_dict(ckpt["model"])
        if self.head is not None:
            if ckpt.get("aux_head") is None:
                raise ValueError("the checkpoint has no early head but aug.early_head is on")
            self.head.load_state_dict(ckpt["aux_head"])
        return ckpt

    def load_state(self, ckpt: dict) -> None:
        self.load_weights(None, ckpt)
        self.best_top1 = ckpt["best_top1"]
