"""Config sections every trainer shares: ``train`` (:class:`TrainConfig`) and the saliency keys of
``aug`` (:class:`SaliencyConfig`), validated here once, and :func:`keep_from_config`, the one place a
:class:`core.KeepAugment` is built from a config."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..keep import KeepAugment

AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SALIENCY_DTYPES = {"": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
SALIENCY_TARGETS = ("label", "max_logit")
REGION_SCORES = ("sum", "mean")


@dataclass
class SaliencyConfig:
    """How the saliency map is computed and regions are scored (``aug.*`` keys of every schema)."""

    tau: float = 0.6  # the quantile: a selective cut never cuts above it, a paste takes a region above it
    low_res: bool = False  # saliency of a downscaled image (the paper's cheap variant)
    low_res_factor: float = 0.5
    saliency_target: str = "label"  # label | max_logit (no labels: unlabelled or soft targets)
    saliency_dtype: str = ""  # "" | bfloat16 | float16: autocast dtype of the saliency pass
    region_score: str = "sum"  # sum (the paper's Eq. 1) | mean (area-normalised: border boxes not favoured)

    def validate(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"aug.tau is a quantile in [0, 1], got {self.tau}")
        if not 0.0 < self.low_res_factor <= 1.0:
            raise ValueError(f"aug.low_res_factor must be in (0, 1], got {self.low_res_factor}")
        if self.saliency_target not in SALIENCY_TARGETS:
            raise ValueError(f"aug.saliency_target must be one of {', '.join(SALIENCY_TARGETS)}, "
                             f"got {self.saliency_target!r}")
        if self.saliency_dtype not in SALIENCY_DTYPES:
            raise ValueError(f"aug.saliency_dtype must be '', 'bfloat16' or 'float16', got {self.saliency_dtype!r}")
        if self.region_score not in REGION_SCORES:
            raise ValueError(f"aug.region_score must be sum or mean, got {self.region_score!r}")

    def saliency_options(self) -> dict:
        """The :class:`core.KeepAugment` keyword arguments these keys set."""
        return dict(tau=self.tau, target=self.saliency_target, low_res=self.low_res,
                    low_res_factor=self.low_res_factor, saliency_dtype=SALIENCY_DTYPES[self.saliency_dtype],
                    region_score=self.region_score)


def keep_from_config(op: str, saliency: SaliencyConfig, *, selective: bool = True, early_head=None,
                     **op_options) -> KeepAugment:
    """A :class:`core.KeepAugment` for ``op`` with the saliency keys of ``saliency`` (the early head only
    when the op is selective: a plain op computes no saliency)."""
    return KeepAugment(op, selective=selective, early_head=early_head if selective else None,
                       **saliency.saliency_options(), **op_options)


@dataclass
class TrainConfig:
    """``train.*``: the loop, the process and the run directory, the same for every trainer."""

    epochs: int = 300
    seed: int = 0
    device: str = ""  # "" = cuda if available, else cpu
    amp: str = ""  # "" | bf16 | fp16
    deterministic: bool = False
    output_dir: str = "runs/cls"
    max_steps_per_epoch: int = 0  # 0 = the whole epoch
    stop_after_epoch: int = 0  # end this process after that epoch (time-limited jobs; resume later)
    tensorboard: bool = True
    progress: bool = True
    check_every: int = 50  # steps between reads of the device (non-finite stop, logged scalars); 1 = every step
    keep_every: int = 0  # also keep a copy epoch_NNNN.pt every N epochs (0 = only last.pt / best.pt)
    # CUDA: the whole step captured as one CUDA graph and replayed (core.engine.graphed), where the step allows
    # it; train.log's second line says which path runs and why
    cuda_graph: bool = True

    def validate(self) -> None:
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"train.amp must be '', 'bf16' or 'fp16', got {self.amp!r}")
        if self.check_every < 1:
            raise ValueError(f"train.check_every must be >= 1, got {self.check_every}")
        for key in ("max_steps_per_epoch", "stop_after_epoch", "keep_every"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key} must be >= 0, got {getattr(self, key)}")
