"""The training loop: one ``Trainer`` for every classification recipe (CIFAR, ImageNet, any method).

``Trainer(cfg).fit()`` trains with torchrun-style DDP (one process per device; a single process
without torchrun), AMP, the method's device-side KeepAugment step, an optional early head, per-epoch
evaluation, CSV / TensorBoard logs and an atomic checkpoint every epoch; ``resume=True`` continues
exactly from the last one. Hooks (objects with ``after_step(trainer, indices)`` and/or
``after_epoch(trainer, epoch)``) observe the run without changing it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from core import EarlyHead
from core.saliency import unwrap_model

from .augment import batch_augment, plan
from .checkpoint import gather_rng_states, save_on_main
from .config import to_dict
from .data import WorkerLoader, build_datasets, collate, device_loader, use_device_loader
from .distributed import all_reduce_sum
from .metrics import RunLog, topk_correct
from .models import create_model, early_hook_point
from .runtime import Runtime


class TrainModule(nn.Module):
    """Backbone plus optional early head, so DDP synchronises both."""

    def __init__(self, backbone: nn.Module, head: EarlyHead | None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor):
        logits = self.backbone(x)
        return logits, (self.head() if self.head is not None else None)


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


class Trainer(Runtime):
    def __init__(self, cfg, hooks: tuple = ()) -> None:
        super().__init__(cfg, cfg.model.channels_last)
        self.hooks = list(hooks)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.backbone = create_model(cfg.model.name, cfg.model.num_classes, **cfg.model.kwargs).to(self.device)
        self.head = None
        if cfg.aug.early_head:
            at = cfg.aug.early_head_at or early_hook_point(self.backbone)
            self.head = EarlyHead(self.backbone, at, cfg.model.num_classes, weight=cfg.aug.early_head_weight)
            self.head.to(self.device)
        self.net = TrainModule(self.backbone, self.head)
        if cfg.model.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        torch.manual_seed(cfg.train.seed + 1000 * self.info.rank)  # per-rank streams from here on
        self.generator = self.new_generator(cfg.train.seed + 1000 * self.info.rank + 1)
        self.keep = batch_augment(cfg.aug, cfg.model.num_classes, self.head)
        self.pair = plan(cfg.aug).pair
        self.steps_per_epoch = self.build_data()
        lr = cfg.optim.lr
        if cfg.optim.lr_reference_batch:
            lr *= cfg.data.batch_size * self.info.world_size / cfg.optim.lr_reference_batch
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=cfg.optim.momentum,
                                         nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.optim, cfg.train.epochs, self.steps_per_epoch))
        self.model = self.net
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.forward = torch.compile(self.model) if cfg.model.compile else self.model
        self.epoch, self.step, self.best_top1 = 0, 0, -1.0  # -1: not evaluated yet
        self.log = RunLog(self.out, self.info.is_main, cfg.train.tensorboard)

    # -- pieces ------------------------------------------------------------------------------------
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
        steps = len(self.loader)
        return min(steps, cfg.train.max_steps_per_epoch) if cfg.train.max_steps_per_epoch else steps

    def clip_gradients(self) -> None:
        """``optim.clip_grad_norm`` > 0: clip the global L2 norm of the (unscaled) gradients, on the device
        (no host read; a non-finite norm leaves the step to the scaler / the non-finite check)."""
        if self.cfg.optim.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.clip_grad_norm, foreach=True)

    def worker_val_loader(self) -> DataLoader:
        """This rank's share of the validation set (every world-th image) through DataLoader workers."""
        shard = Subset(self.val_set, range(self.info.rank, len(self.val_set), self.info.world_size))
        return DataLoader(shard, self.cfg.data.batch_size, num_workers=self.cfg.data.workers, collate_fn=collate)

    def train_step(self, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; returns (loss, number of top-1 hits on the original labels)."""
        if self.pair:
            clean, augmented, y, _ = tensors
            x, x_aug = self.normalize(clean), self.normalize(augmented)
        else:
            image, y, _ = tensors
            x, x_aug = self.normalize(image), None
        y = y.to(self.device, non_blocking=True)
        inputs, target = x, y
        if self.keep is not None:
            with self.autocast():
                out = self.keep(unwrap_model(self.model).backbone, x, y, x_aug=x_aug, generator=self.generator)
            inputs, target = out.x, out.target
        with self.autocast():
            logits, aux = self.forward(inputs)
            loss = F.cross_entropy(logits.float(), target)
            if aux is not None:
                loss = loss + self.head.weight * F.cross_entropy(aux.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.clip_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.net.eval()
        stats = torch.zeros(3, device=self.device)  # top1, top5, count
        for tensors, _ in self.val_loader:
            if tensors is None:
                continue
            x, y = self.normalize(tensors[0]), tensors[1].to(self.device)
            with self.autocast():
                logits = self.backbone(x)
            stats[:2] += topk_correct(logits.float(), y)
            stats[2] += len(y)
        self.net.train()
        top1, top5, n = all_reduce_sum(stats, self.info).tolist()
        return {"val_top1": 100 * top1 / max(n, 1), "val_top5": 100 * top5 / max(n, 1)}

    # -- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict:
        states = gather_rng_states(self.generator, self.info)
        return {"model": self.backbone.state_dict(), "aux_head": self.head.state_dict() if self.head else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step, "rng": states,
                "best_top1": self.best_top1, "config": to_dict(self.cfg), "model_name": self.cfg.model.name}

    def save(self) -> None:
        self.save_checkpoint(self.state())  # state() is a collective

    def save_best(self) -> None:
        """``best.pt``: the weights (backbone, early head) of the best validation epoch so far."""
        state = {"model": self.backbone.state_dict(), "aux_head": self.head.state_dict() if self.head else None,
                 "epoch": self.epoch, "val_top1": self.best_top1, "config": to_dict(self.cfg),
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

    def resume(self, path: str | Path | None = None) -> None:
        ckpt = self.load_weights(path, self.load_run_checkpoint(path or self.out / "last.pt"))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.best_top1 = ckpt["best_top1"]
        self.restore_progress(ckpt)

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> dict:
        self.start_fit(resume, overwrite)
        metrics: dict = {}
        self.net.train()
        while self.epoch < self.cfg.train.epochs:
            metrics = self.train_epoch()
            self.epoch += 1
            if self.epoch % self.cfg.train.eval_every == 0 or self.epoch == self.cfg.train.epochs:
                metrics.update(self.evaluate())
                if metrics["val_top1"] > self.best_top1:
                    self.best_top1 = metrics["val_top1"]
                    self.save_best()
            self.save()
            self.log_epoch({"epoch": self.epoch, **metrics})
            for h in self.hooks:
                getattr(h, "after_epoch", lambda *a: None)(self, self.epoch)
            if self.cfg.train.stop_after_epoch and self.epoch >= self.cfg.train.stop_after_epoch:
                break
        return self.finish_fit(metrics)

    def train_epoch(self) -> dict:
        self.loader.set_epoch(self.epoch)
        self.totals = torch.zeros(3, device=self.device)  # this rank's loss sum, hits, images
        skipped: list[str] = []
        self.epoch_start = time.perf_counter()
        self.bar = self.progress_bar()
        for i, (tensors, bad) in enumerate(self.loader):
            if i >= self.steps_per_epoch:
                break
            skipped += bad
            if tensors is None:
                continue
            self.step_batch(tensors)
            self.bar.update()
        self.check_point()
        self.bar.close()
        seconds = time.perf_counter() - self.epoch_start
        if skipped:  # each rank names the files it skipped (rank 0 also into train.log)
            rank = f"rank {self.info.rank}: " if self.info.distributed else ""
            line = (f"{rank}epoch {self.epoch + 1}: skipped {len(skipped)} unreadable image(s): "
                    f"{', '.join(sorted(set(skipped)))}")
            self.train_log.line(line) if self.info.is_main else print(line, flush=True)
        totals = all_reduce_sum(torch.cat([self.totals, self.totals.new_full((1,), len(skipped))]), self.info)
        loss_sum, hits, n, skipped = totals.tolist()
        return {"train_loss": loss_sum / max(n, 1), "train_top1": 100 * hits / max(n, 1),
                "lr": self.optimizer.param_groups[0]["lr"], "img_s": n / seconds, "seconds": seconds,
                "skipped": int(skipped)}

    def step_batch(self, tensors: list[torch.Tensor]) -> None:
        """One loop iteration: the step, this rank's running sums, the bookkeeping - no host sync."""
        loss, hits = self.train_step(tensors)
        self.totals[0] += loss.float() * len(tensors[-1])
        self.totals[1] += hits
        self.totals[2] += len(tensors[-1])
        self.finish_step(loss, tensors[-1])

    def refresh_progress(self) -> None:
        """This rank's running loss / accuracy / images per second on the bar (at check points only)."""
        if self.bar is None or self.bar.disable:
            return
        loss_sum, hits, n = self.totals.tolist()
        rate = n / max(time.perf_counter() - self.epoch_start, 1e-9)
        self.bar.set_postfix(loss=f"{loss_sum / max(n, 1):.3f}", acc=f"{100 * hits / max(n, 1):.1f}",
                             img_s=f"{rate:.0f}")
