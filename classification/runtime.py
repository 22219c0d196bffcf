"""What every trainer of this project sets up the same way: the process (torchrun rank, device,
determinism), mixed precision, and uint8 -> normalised float batches on the device."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from . import run_dir
from .checkpoint import load_checkpoint, restore_rng_states, save_on_main
from .config import save_config, to_dict
from .distributed import barrier, init_distributed

AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def slow_bf16_settings(cfg, device: torch.device) -> list[str]:
    """The bf16 settings of ``cfg`` that run emulated on this CPU (none on CUDA or a CPU with bf16 units)."""
    wanted = [k for k, v in (("train.amp=bf16", cfg.train.amp == "bf16"),
                             ("aug.saliency_dtype=bfloat16", getattr(cfg.aug, "saliency_dtype", "") == "bfloat16"))
              if v]
    if not wanted or device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return []
    return wanted


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
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        self.channels_last = channels_last
        self.amp_dtype = AMP_DTYPES[cfg.train.amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.bar = None  # the running epoch's progress bar
        self.mean = torch.tensor(cfg.data.mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(cfg.data.std, device=self.device).view(1, -1, 1, 1) * 255
        slow = slow_bf16_settings(cfg, self.device)
        if slow and self.info.is_main:
            print(f"warning: {' and '.join(slow)} on a CPU without native bfloat16 (oneDNN reports no bf16 "
                  "support): bf16 convolutions are emulated, many times slower than float32 here", flush=True)

    def new_generator(self, seed: int) -> torch.Generator:
        """The trainer's generator for the device-side random draws (KeepAugment boxes)."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` from the loader -> normalised float on the device."""
        x = (x.to(self.device, non_blocking=True).float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def progress_bar(self, unit_name: str = "epoch") -> tqdm:
        """The epoch's progress bar (rank 0, unless ``train.progress`` is off); called as an epoch starts."""
        self.running_epoch = self.epoch + 1  # the epoch an interrupt lands in (self.epoch counts finished ones)
        return tqdm(total=self.steps_per_epoch, desc=f"{unit_name} {self.epoch + 1}/{self.cfg.train.epochs}",
                    unit="step", disable=not (self.info.is_main and self.cfg.train.progress), leave=False)

    def start_checks(self) -> None:
        """Reset the device-side bookkeeping that :meth:`finish_step` fills and :meth:`check_point` reads."""
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.pending_scalars: list[tuple[int, torch.Tensor]] = []

    def finish_step(self, loss: torch.Tensor, indices) -> None:
        """After an optimisation step, without waiting for the device: note the first step whose loss is
        non-finite (on the device), count the step, run the hooks' ``after_step(trainer, indices)``, and
        every ``train.check_every`` steps read the device (:meth:`check_point`)."""
        bad = ~torch.isfinite(loss.detach())
        self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), self.step + 1, self.first_bad_step)
        self.step += 1
        if self.log.has_tb and self.step % 10 == 0:
            self.pending_scalars.append((self.step, loss.detach().float()))
        for h in self.hooks:
            getattr(h, "after_step", lambda *a: None)(self, indices)
        if self.step % self.cfg.train.check_every == 0:
            self.check_point()

    def check_point(self) -> None:
        """The one place a training epoch waits for the device (every ``train.check_every`` steps and at the
        epoch end): stop if any rank saw a non-finite loss since the start, write the pending TensorBoard
        scalars, refresh the progress bar. The weights of up to ``check_every - 1`` steps after a bad one
        are discarded with the process; ``last.pt`` (written at epoch ends, after a check) stays good."""
        never = 2**62
        first = torch.where(self.first_bad_step < 0, never, self.first_bad_step)
        if self.info.distributed:  # the earliest bad step of any rank
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
        bad_step = int(first)
        if bad_step != never:
            raise FloatingPointError(f"non-finite loss at step {bad_step} (epoch {self.epoch + 1}); stopping; "
                                     f"the last good checkpoint is {self.out / 'last.pt'}")
        if self.pending_scalars:
            values = torch.stack([v for _, v in self.pending_scalars]).tolist()
            for (step, _), value in zip(self.pending_scalars, values):
                self.log.scalar("train/loss", value, step)
            self.pending_scalars.clear()
        self.refresh_progress()

    def refresh_progress(self) -> None:
        """Subclasses show their running averages on the progress bar here (read at check points only)."""

    def start_fit(self, resume: bool, overwrite: bool = False) -> bool:
        """Apply the run-directory rules (:mod:`classification.run_dir`), resume from ``last.pt`` if asked and
        there is one (the subclass's ``resume``), write the resolved config and the environment, and say
        where the run lives. Returns whether the run resumed."""
        resume = run_dir.prepare(self.out, resume, overwrite, self.info.is_main)
        barrier(self.info)
        if resume:
            self.resume()
        self.start_checks()
        self.train_log = run_dir.TrainLog(self.out, self.info.is_main)
        if self.info.is_main:
            save_config(self.cfg, self.out / "config.yaml")
            run_dir.record_env(self.out, self.device, self.info.world_size, resume)
            where = f"resumed at {self.counter} {getattr(self, self.counter)}" if resume else "new run"
            self.train_log.line(f"run directory {self.out} ({where}; {self.info.world_size} process(es) on "
                                f"{self.device.type})")
        return resume

    counter = "epoch"  # what the run counts in its log lines and checkpoints ("step" for UDA rounds)

    def load_run_checkpoint(self, path: str | Path, only: tuple[str, ...] = ()) -> dict:
        """A checkpoint of this kind of run, after checking that its config fits (see
        :func:`classification.run_dir.check_resume_config`); allowed changes are reported."""
        ckpt = load_checkpoint(path)
        if "config" not in ckpt:
            raise run_dir.RunDirError(f"{path} is not a training checkpoint of this project (no 'config')")
        allowed = run_dir.check_resume_config(ckpt["config"], to_dict(self.cfg), Path(path), only)
        if allowed and self.info.is_main and not only:
            print(f"resuming {path} with changed settings: {'; '.join(allowed)}", flush=True)
        return ckpt

    def log_epoch(self, row: dict) -> None:
        """The epoch's row: ``metrics.csv`` / TensorBoard, and one line on the terminal and in ``train.log``."""
        self.log.epoch(row)
        self.train_log.line(run_dir.epoch_line(row, self.cfg.train.epochs))

    def save_checkpoint(self, state: dict) -> None:
        """``last.pt`` (atomically, rank 0; ``state`` is built collectively) and, every ``train.keep_every``
        epochs, a copy ``epoch_NNNN.pt``."""
        save_on_main(state, self.out / "last.pt", self.info)
        self.saved_epoch = self.epoch
        keep = self.cfg.train.keep_every
        if keep and self.epoch % keep == 0 and self.info.is_main:
            shutil.copyfile(self.out / "last.pt", self.out / f"epoch_{self.epoch:04d}.pt")

    def finish_fit(self, metrics: dict) -> dict:
        """End of ``fit``: a run that was already finished reports its last metrics; rank 0 lists the files."""
        self.log.close()
        if not metrics:
            metrics = {k: v for k, v in self.log.last_row().items() if k != "epoch"}
        if self.info.is_main and self.out.is_dir():
            files = sorted(p.name + "/" * p.is_dir() for p in self.out.iterdir() if not p.name.startswith("."))
            self.train_log.line(f"finished at {self.counter} {getattr(self, self.counter)}; "
                                f"{self.out} holds {', '.join(files)}")
        return metrics

    def restore_progress(self, ckpt: dict) -> None:
        """Epoch, step and this rank's RNG states from a checkpoint; drop log rows written after it."""
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.saved_epoch = self.epoch
        restore_rng_states(ckpt["rng"], self.generator, self.info)
        self.log.truncate_after(self.epoch)
