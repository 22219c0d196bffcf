"""The BoT re-ID trainer with (selective) random erasing in the training step.

Same conventions as :mod:`classification.engine`: torchrun DDP, AMP, channels_last, atomic checkpoint
every epoch with exact resume, progress bar, ``metrics.csv`` / TensorBoard, and an evaluation that
returns (and writes as JSON) CMC rank-1/5/10, mAP and mINP.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from classification.checkpoint import gather_rng_states
from classification.config import to_dict
from classification.data import EpochSeeded, WithEpoch
from classification.distributed import all_reduce_sum, barrier
from classification.metrics import RunLog
from classification.runtime import Runtime
from core import KeepAugment

from .data import ReidImages
from .datasets import build_dataset
from .losses import CenterLoss, batch_hard_triplet, smooth_cross_entropy
from .metrics import distance_matrix, evaluate_market
from .model import BoTNet, LogitsView
from .rerank import re_ranking
from .samplers import IdentitySampler


class ReidTrainModule(nn.Module):
    """Network + centre-loss centres, so DDP synchronises both."""

    def __init__(self, net: BoTNet, center: CenterLoss) -> None:
        super().__init__()
        self.net, self.center = net, center

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        logits, f_t = self.net(x)
        return logits, f_t, self.center(f_t, y)


def warmup_multistep(optim_cfg):
    """BoT WarmupMultiStepLR stepped at each epoch start (so the first epoch already has alpha = 1/10):
    for 1-based epoch e, ``warmup_factor * (1 - a) + a`` with ``a = e / warmup_epochs`` while e is below
    it, times gamma per milestone reached (3.8e-5 in epoch 1, 3.5e-4 in 10-39, 3.5e-5 in 40-69, ...)."""
    def f(index: int) -> float:
        epoch, warm = index + 1, 1.0
        if epoch < optim_cfg.warmup_epochs:
            alpha = epoch / optim_cfg.warmup_epochs
            warm = optim_cfg.warmup_factor * (1 - alpha) + alpha
        return warm * optim_cfg.gamma ** sum(epoch >= m for m in optim_cfg.milestones)
    return f


class ReidTrainer(Runtime):
    def __init__(self, cfg, hooks: tuple = ()) -> None:
        super().__init__(cfg, cfg.model.channels_last)
        self.hooks = list(hooks)
        self.dataset = build_dataset(cfg.data.dataset, cfg.data.root)
        torch.manual_seed(cfg.train.seed)
        self.net = BoTNet(self.dataset.num_train_pids, cfg.model.depth, cfg.model.last_stride, cfg.model.neck_feat)
        if cfg.model.pretrained:
            self.net.load_backbone(cfg.model.pretrained)
        elif cfg.model.torchvision_weights:
            import torchvision

            name = f"ResNet{cfg.model.depth}_Weights"
            state = getattr(torchvision.models, name)[cfg.model.torchvision_weights].get_state_dict(progress=False)
            self.net.base.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
        self.center = CenterLoss(self.dataset.num_train_pids, self.net.dim)
        self.module = ReidTrainModule(self.net, self.center).to(self.device)
        if cfg.model.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        torch.manual_seed(cfg.train.seed + 1000 * self.info.rank)
        self.generator = self.new_generator(cfg.train.seed + 1000 * self.info.rank + 1)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.center_optimizer = torch.optim.SGD(self.center.parameters(), lr=cfg.optim.center_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_multistep(cfg.optim))
        self.keep = None
        if cfg.aug.erasing:
            dtype = {"": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.aug.saliency_dtype]
            # fill 0 in normalised space = the mean colour in pixel space (BoT fills normalised space with
            # the mean's raw values instead, RECIPES.md A.1)
            a = cfg.aug
            self.keep = KeepAugment("erasing", selective=a.keep, p=a.erasing_prob, fill=0.0,
                                    erasing_area=tuple(a.erasing_area), erasing_ratio=tuple(a.erasing_ratio),
                                    tau=cfg.aug.tau, low_res=cfg.aug.low_res, low_res_factor=cfg.aug.low_res_factor,
                                    saliency_dtype=dtype)
        self.model = self.module
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        train = ReidImages(self.dataset.train, cfg.data, train=True)
        self.sampler = IdentitySampler([p for _, p, _ in self.dataset.train], cfg.data.p, cfg.data.k, cfg.train.seed,
                                       self.info.rank, self.info.world_size)
        # each image's flip / crop is seeded by (seed, epoch, index): exact resume with any number of workers
        # global batch P x K as in BoT's single-GPU recipe: each of W ranks loads P / W identities x K
        self.loader = DataLoader(EpochSeeded(train, cfg.train.seed), self.sampler.batch_size,
                                 sampler=WithEpoch(self.sampler), num_workers=cfg.data.workers,
                                 drop_last=True, pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = len(self.loader)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        self.epoch, self.step = 0, 0
        self.log = RunLog(self.out, self.info.is_main, cfg.train.tensorboard)

    def train_step(self, images: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        o = self.cfg.optim
        x, y = self.normalize(images), pids.to(self.device, non_blocking=True)
        if self.keep is not None:
            with self.autocast():
                x = self.keep(LogitsView(self.net), x, y, generator=self.generator).x
        with self.autocast():
            logits, f_t, center = self.model(x, y)
            ce = smooth_cross_entropy(logits, y, o.label_smooth)
            tri = batch_hard_triplet(f_t, y, o.margin)
            loss = ce + tri + o.center_weight * center
        self.optimizer.zero_grad(set_to_none=True)
        self.center_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.unscale_(self.center_optimizer)
        for p in self.center.parameters():  # BoT: the centre update does not depend on the loss weight
            p.grad.mul_(1.0 / o.center_weight)
        self.scaler.step(self.center_optimizer)
        self.scaler.update()
        hits = (logits.argmax(1) == y).sum().float()
        return torch.stack([loss.detach().float(), ce.detach().float(), tri.detach().float(), hits,
                            torch.full_like(hits, len(y))])

    def train_epoch(self) -> dict:
        self.sampler.set_epoch(self.epoch)
        self.module.train()
        self.totals, self.epoch_start, self.done = torch.zeros(5, device=self.device), time.perf_counter(), 0
        self.bar = self.progress_bar()
        for i, (images, pids, _, _) in enumerate(self.loader):
            if i >= self.steps_per_epoch:
                break
            stats = self.train_step(images, pids)
            self.totals += stats
            self.done += 1
            self.finish_step(stats[0], None)
            self.bar.update()
        self.check_point()
        self.bar.close()
        steps = max(1, self.done)
        loss, ce, tri, hits, n = all_reduce_sum(self.totals, self.info).tolist()
        w = self.info.world_size
        return {"train_loss": loss / steps / w, "ce_loss": ce / steps / w, "triplet_loss": tri / steps / w,
                "train_top1": 100 * hits / max(n, 1), "lr": self.optimizer.param_groups[0]["lr"],
                "img_s": n / (time.perf_counter() - self.epoch_start)}

    def refresh_progress(self) -> None:
        """This rank's running loss / accuracy / images per second (read at check points only)."""
        if self.bar is None or self.bar.disable or not self.done:
            return
        loss, _, _, hits, n = self.totals.tolist()
        self.bar.set_postfix(loss=f"{loss / self.done:.3f}", acc=f"{100 * hits / max(n, 1):.1f}",
                             img_s=f"{n / (time.perf_counter() - self.epoch_start):.0f}")

    @torch.no_grad()
    def extract(self, items) -> tuple[torch.Tensor, list[int], list[int]]:
        self.net.eval()
        loader = DataLoader(ReidImages(items, self.cfg.data, train=False), self.cfg.data.test_batch,
                            num_workers=self.cfg.data.workers)
        feats, pids, cams = [], [], []
        for images, pid, cam, _ in loader:
            x = self.normalize(images)
            with self.autocast():
                f = self.net(x).float()
                if self.cfg.eval.flip:
                    f = f + self.net(x.flip(3)).float()
            feats.append(f.cpu())
            pids += pid.tolist()
            cams += cam.tolist()
        self.net.train()
        return torch.cat(feats), pids, cams

    def evaluate(self) -> dict:
        """Market-1501 protocol on query vs gallery (rank 0 computes; others wait)."""
        result: dict = {}
        if self.info.is_main:
            e = self.cfg.eval
            qf, qp, qc = self.extract(self.dataset.query)
            gf, gp, gc = self.extract(self.dataset.gallery)
            dist = distance_matrix(qf, gf, e.metric).numpy()
            result = {f"{k}": v for k, v in evaluate_market(dist, qp, gp, qc, gc).items()}
            if e.rerank:
                rr = re_ranking(torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1),
                                e.k1, e.k2, e.lambda_value)
                result.update({f"rerank_{k}": v for k, v in evaluate_market(rr, qp, gp, qc, gc).items()})
        barrier(self.info)
        return result

    def state(self) -> dict:
        states = gather_rng_states(self.generator, self.info)
        return {"model": self.net.state_dict(), "center": self.center.state_dict(),
                "optimizer": self.optimizer.state_dict(), "center_optimizer": self.center_optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": self.epoch,
                "step": self.step, "rng": states, "config": to_dict(self.cfg)}

    def save(self) -> None:
        self.save_checkpoint(self.state())  # state() is a collective

    def resume(self, path: str | Path | None = None, weights_only: bool = False) -> None:
        ckpt = self.load_run_checkpoint(path or self.out / "last.pt", only=("model.",) if weights_only else ())
        self.net.load_state_dict(ckpt["model"])
        self.center.load_state_dict(ckpt["center"])
        if weights_only:
            return
        for name in ("optimizer", "center_optimizer", "scheduler", "scaler"):
            getattr(self, name).load_state_dict(ckpt[name])
        self.restore_progress(ckpt)

    def fit(self, resume: bool = False, overwrite: bool = False) -> dict:
        self.start_fit(resume, overwrite)
        metrics: dict = {}
        while self.epoch < self.cfg.train.epochs:
            metrics = self.train_epoch()
            self.scheduler.step()
            self.epoch += 1
            if self.epoch % self.cfg.eval.every == 0 or self.epoch == self.cfg.train.epochs:
                metrics.update(self.evaluate())
                if self.info.is_main:
                    (self.out / "eval.json").write_text(json.dumps({"epoch": self.epoch, **metrics}, indent=2))
            self.save()
            self.log_epoch({"epoch": self.epoch, **metrics})
            if self.cfg.train.stop_after_epoch and self.epoch >= self.cfg.train.stop_after_epoch:
                break
        return self.finish_fit(metrics)
