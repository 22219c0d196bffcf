"""What every trainer of this project sets up the same way: the process (torchrun rank, device,
determinism), mixed precision, and uint8 -> normalised float batches on the device."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import restore_rng_states
from .config import save_config
from .distributed import init_distributed

AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Runtime:
    """Base of the trainers. ``cfg.train`` gives device, amp, deterministic, output_dir and progress;
    ``cfg.data`` gives mean and std (0-1 scale). Subclasses set ``hooks``, ``generator``, ``log``,
    ``steps_per_epoch``, ``epoch`` and ``step``."""

    def __init__(self, cfg, channels_last: bool) -> None:
        self.cfg = cfg
        self.info = init_distributed(cfg.train.device)
        self.device, self.out = self.info.device, Path(cfg.train.output_dir)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        self.channels_last = channels_last
        self.amp_dtype = AMP_DTYPES[cfg.train.amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.mean = torch.tensor(cfg.data.mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(cfg.data.std, device=self.device).view(1, -1, 1, 1) * 255

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` from the loader -> normalised float on the device."""
        x = (x.to(self.device, non_blocking=True).float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def progress_bar(self, unit_name: str = "epoch") -> tqdm:
        """The epoch's progress bar (rank 0, unless ``train.progress`` is off)."""
        return tqdm(total=self.steps_per_epoch, desc=f"{unit_name} {self.epoch + 1}/{self.cfg.train.epochs}",
                    unit="step", disable=not (self.info.is_main and self.cfg.train.progress), leave=False)

    def finish_step(self, loss: torch.Tensor, batch: int, indices) -> None:
        """After an optimisation step: stop on a non-finite (all-reduced) loss, count the step, run
        the hooks' ``after_step(trainer, indices)``."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step + 1} (epoch {self.epoch + 1}, "
                                     f"batch {batch}); stopping; the last good checkpoint is {self.out / 'last.pt'}")
        self.step += 1
        for h in self.hooks:
            getattr(h, "after_step", lambda *a: None)(self, indices)

    def start_fit(self, resume: bool) -> None:
        """Resume from the run's ``last.pt`` if asked (the subclass's ``resume``); rank 0 writes the resolved
        config to the run directory."""
        if resume:
            self.resume()
        if self.info.is_main:
            save_config(self.cfg, self.out / "config.yaml")

    def restore_progress(self, ckpt: dict) -> None:
        """Epoch, step and this rank's RNG states from a checkpoint; drop log rows written after it."""
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        restore_rng_states(ckpt["rng"], self.generator, self.info)
        self.log.truncate_after(self.epoch)
