"""The BoT re-ID trainer with (selective) random erasing in the training step.

The loop, checkpoints, exact resume, hooks, progress bar and logs are :class:`core.engine.trainer.TrainerBase`'s
(as the classification trainer's): torchrun DDP, AMP, channels_last, an atomic checkpoint every epoch. This
module supplies the BoT step (ID + triplet + centre loss, the centre optimizer), the P x K data and an
evaluation that returns (and writes as ``eval.json``) CMC rank-1/5/10, mAP and mINP.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from core.engine.batch import Batch, Collate
from core.engine.distributed import barrier
from core.engine.graphed import lr_as_float
from core.engine.sections import keep_from_config
from core.engine.seeding import EpochSeeded, WithEpoch
from core.engine.trainer import StepStats, TrainerBase

from .data import ReidImages
from .datasets import build_dataset
from .losses import CenterLoss, batch_hard_triplet, smooth_cross_entropy
from .metrics import distance_matrix, evaluate_market
from .model import BoTNet, LogitsView
from .rerank import re_ranking
from .samplers import IdentitySampler

TRAIN_COLLATE = Collate(("images", "labels", None, "indices"))  # ReidImages: (image, pid, camera, index)


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


class ReidTrainer(TrainerBase):
    schedule_per = "epoch"  # BoT's WarmupMultiStepLR steps at epoch starts
    stat_names = ("loss", "ce_loss", "triplet_loss", "hits", "images")

    def __init__(self, cfg, hooks: tuple = ()) -> None:
        super().__init__(cfg, hooks, cfg.model.channels_last)
        self.dataset = build_dataset(cfg.data.dataset, cfg.data.root)
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
        self.generator = self.seed_rank_streams()
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                          **self.optimizer_options())
        self.center_optimizer = torch.optim.SGD(self.center.parameters(), lr=cfg.optim.center_lr,
                                                **self.optimizer_options())
        self.extra_optimizers = [(self.center_optimizer, self.scale_center_grads)]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_multistep(cfg.optim))
        self.keep = None
        if cfg.aug.erasing:
            # aug.erasing_fill: bot (default: BoT's mean values written into normalised space), mean (0 in
            # normalised space = the mean colour) or random (per-pixel normal); see reid.schema.AugConfig
            a = cfg.aug
            self.keep = keep_from_config("erasing", a, selective=a.keep, p=a.erasing_prob,
                                         fill=a.erasing_fill_value(cfg.data.mean),
                                         erasing_area=tuple(a.erasing_area), erasing_ratio=tuple(a.erasing_ratio))
        self.model = self.distribute(self.module)
        train = ReidImages(self.dataset.train, cfg.data, train=True)
        self.sampler = IdentitySampler([p for _, p, _ in self.dataset.train], cfg.data.p, cfg.data.k, cfg.train.seed,
                                       self.info.rank, self.info.world_size)
        # each image's flip / crop is seeded by (seed, epoch, index): exact resume with any number of workers
        # global batch P x K as in BoT's single-GPU recipe: each of W ranks loads P / W identities x K
        self.loader = DataLoader(EpochSeeded(train, cfg.train.seed), self.sampler.batch_size,
                                 sampler=WithEpoch(self.sampler), num_workers=cfg.data.workers, drop_last=True,
                                 collate_fn=TRAIN_COLLATE, pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = self.limit_steps(len(self.loader))

    @property
    def eval_every(self) -> int:
        return self.cfg.eval.every

    def train_batches(self):
        self.sampler.set_epoch(self.epoch)
        return self.loader

    def scale_center_grads(self) -> None:
        """BoT: the centre update does not depend on the loss weight."""
        for p in self.center.parameters():
            p.grad.mul_(1.0 / self.cfg.optim.center_weight)

    def run_step(self, batch: Batch) -> StepStats:
        o = self.cfg.optim
        x, y = self.normalize(batch.images), self.to_device(batch.labels)
        if self.keep is not None:
            with self.autocast():
                x = self.keep(LogitsView(self.net), x, y, generator=self.generator).x
        with self.autocast():
            logits, f_t, center = self.model(x, y)
            ce = smooth_cross_entropy(logits, y, o.label_smooth)
            tri = batch_hard_triplet(f_t, y, o.margin)
            loss = ce + tri + o.center_weight * center
        self.optimizer_step(loss)
        hits = (logits.argmax(1) == y).sum().float()
        loss = loss.detach().float()
        return StepStats(loss, torch.stack([loss, ce.detach().float(), tri.detach().float(), hits,
                                            torch.full_like(hits, len(y))]))

    def epoch_metrics(self, sums: list[float], steps: int, seconds: float, skipped: int) -> dict:
        loss, ce, tri, hits, n = sums
        steps, w = max(1, steps), self.info.world_size
        return {"train_loss": loss / steps / w, "ce_loss": ce / steps / w, "triplet_loss": tri / steps / w,
                "train_top1": 100 * hits / max(n, 1), "lr": self.current_lr(),
                "img_s": n / seconds, "seconds": seconds}

    def progress_postfix(self, sums: list[float], steps: int, seconds: float) -> dict:
        loss, _, _, hits, n = sums
        return {"loss": f"{loss / max(steps, 1):.3f}", "acc": f"{100 * hits / max(n, 1):.1f}",
                "img_s": f"{n / seconds:.0f}"}

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
            result = dict(evaluate_market(dist, qp, gp, qc, gc))
            if e.rerank:
                rr = re_ranking(torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1),
                                e.k1, e.k2, e.lambda_value)
                result.update({f"rerank_{k}": v for k, v in evaluate_market(rr, qp, gp, qc, gc).items()})
        barrier(self.info)
        return result

    def record_evaluation(self, metrics: dict) -> None:
        if self.info.is_main:
            (self.out / "eval.json").write_text(json.dumps({"epoch": self.epoch, **metrics}, indent=2))

    def state(self) -> dict:
        return {"model": self.net.state_dict(), "center": self.center.state_dict(),
                "center_optimizer": lr_as_float(self.center_optimizer.state_dict())}

    def load_weights(self, path: str | Path | None, ckpt: dict | None = None) -> dict:
        """The network and centres of a training checkpoint whose model config matches this one (evaluation)."""
        ckpt = ckpt or self.load_run_checkpoint(path, only=("model.",))
        self.net.load_state_dict(ckpt["model"])
        self.center.load_state_dict(ckpt["center"])
        return ckpt

    def load_state(self, ckpt: dict) -> None:
        self.load_weights(None, ckpt)
        self.center_optimizer.load_state_dict(ckpt["center_optimizer"])
