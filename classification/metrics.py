"""Top-k accuracy and the run logs (CSV per epoch, TensorBoard scalars), written by rank 0 only."""

from __future__ import annotations

import csv
from pathlib import Path

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is in the top-k, for each k, as a float tensor (no host sync)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hit = top == target[:, None]
    return torch.stack([hit[:, : min(k, k_max)].any(1).sum() for k in ks]).float()


class RunLog:
    """``metrics.csv`` (one row per epoch) and TensorBoard scalars in ``output_dir``."""

    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled, self.path = enabled, Path(output_dir) / "metrics.csv"
        self.tensorboard, self.tb_dir, self._tb = enabled and tensorboard, Path(output_dir) / "tb", None

    @property
    def tb(self):
        """The TensorBoard writer, created at the first scalar (a failed start leaves no empty event file);
        None when TensorBoard is off or on other ranks."""
        if self.tensorboard and self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.tb_dir))
        return self._tb

    @property
    def has_tb(self) -> bool:
        return self.tensorboard

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.tensorboard:
            self.tb.add_scalar(name, value, step)

    def epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                self.scalar(f"epoch/{k}", v, row["epoch"])

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` (written by a run that died before its checkpoint)."""
        if not (self.enabled and self.path.exists()):
            return
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        keep = [r for r in rows if int(r["epoch"]) <= epoch]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)

    def last_row(self) -> dict:
        """The last epoch's metrics (numbers as floats), or {} if there are none."""
        if not self.path.is_file():
            return {}
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return {}
        out = {}
        for k, v in rows[-1].items():
            try:
                out[k] = int(v) if k == "epoch" else float(v)
            except (TypeError, ValueError):
                out[k] = v
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
