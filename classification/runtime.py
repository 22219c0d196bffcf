"""What every trainer of this project sets up the same way: the process (torchrun rank, device,
determinism), mixed precision, and uint8 -> normalised float batches on the device."""

from __future__ import annotations

from pathlib import Path

import torch

from .distributed import init_distributed

AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Runtime:
    """Base of the trainers. ``cfg.train`` gives device, amp, deterministic and output_dir;
    ``cfg.data`` gives mean and std (0-1 scale)."""

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
