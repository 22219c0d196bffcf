"""The trainer base: one loop for every trainer of this project (classification, UDA rounds, re-ID).

:class:`TrainerBase` owns what every run does the same way: the process (torchrun rank, device,
determinism), mixed precision, uint8 -> normalised float batches, ``fit`` with its epochs, evaluation
cadence, atomic checkpoints, exact resume, hooks, progress bar and the one place an epoch waits for the
device (:meth:`TrainerBase.device_check`). A subclass supplies::

    run_step(batch) -> StepStats        # one optimisation step, no host sync (use optimizer_step)
    train_batches() -> iterable[Batch]  # this epoch's batches
    evaluate() -> dict                  # metrics of the current weights
    state() -> dict / load_state(ckpt)  # its part of a checkpoint (weights, extra optimizers, ...)
    epoch_metrics(...) -> dict          # the epoch's row from the summed StepStats
"""

from __future__ import annotations

import itertools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import run_dir
from .checkpoint import gather_rng_states, load_checkpoint, restore_rng_states, save_on_main
from .compiled import CompiledStep
from .config import ConfigError, from_dict, save_config, to_dict
from .distributed import all_reduce_sum, barrier, init_distributed
from .graphed import WARMUP_STEPS, CudaGraphs, GraphedStep, lr_as_float, lr_on_device
from .hooks import check_hooks
from .logs import RunLog, TrainLog, epoch_line
from .sections import AMP_DTYPES

PROGRESS_SECONDS = 2.0  # the progress bar's figures refresh at least this often (without waiting for the device)


@dataclass
class StepStats:
    """What :meth:`TrainerBase.run_step` returns, on the device (never read by the step itself).

    Attributes:
        loss: the step's loss (0-dim): the non-finite check and the TensorBoard ``train/loss`` scalar.
        sums: 1-D values the epoch adds up, named by the trainer's ``stat_names``.
    """

    loss: torch.Tensor
    sums: torch.Tensor


def slow_bf16_settings(cfg, device: torch.device) -> list[str]:
    """The bf16 settings of ``cfg`` that run emulated on this CPU (none on CUDA or a CPU with bf16 units)."""
    if device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return []
    return [k for k, v in (("train.amp=bf16", cfg.train.amp == "bf16"),
                           ("aug.saliency_dtype=bfloat16", cfg.aug.saliency_dtype == "bfloat16")) if v]


class TrainerBase:
    """Base of the trainers. ``cfg.train`` is a :class:`~core.engine.sections.TrainConfig`, ``cfg.aug`` a
    :class:`~core.engine.sections.SaliencyConfig`, ``cfg.data`` has ``mean`` / ``std`` (0-1 scale).

    A subclass sets ``module`` (the trained ``nn.Module``, undistributed), ``optimizer``, ``scheduler`` (a
    ``LambdaLR``), ``generator`` (:meth:`seed_rank_streams`) and ``steps_per_epoch``, and may set ``extra_optimizers``
    (stepped after ``optimizer`` by :meth:`optimizer_step`), ``schedule_per`` (``"step"`` or ``"epoch"``),
    ``counter`` and ``stat_names``."""

    counter = "epoch"  # what the run counts in its log lines ("step" for UDA rounds)
    clip_norm = 0.0  # > 0: optimizer_step clips the global gradient norm of ``module``'s parameters to this
    resume_changes: list[str] = []  # the allowed config changes of the checkpoint last loaded (for the log)
    unit_name = "epoch"  # the progress bar's label
    schedule_per = "step"  # the scheduler steps after every optimisation step, or at every epoch's end
    stat_names: tuple[str, ...] = ("loss",)

    def __init__(self, cfg, hooks=(), channels_last: bool = False) -> None:
        self.cfg = cfg
        self.hooks = check_hooks(hooks)
        self.info = init_distributed(cfg.train.device)
        self.device, self.out = self.info.device, Path(cfg.train.output_dir)
        self.step_path = "eager step"  # which path the step runs, for the log (see step_function, use_graphs)
        self.graphed: GraphedStep | None = None  # the step as a CUDA graph (train.cuda_graph), set by start_fit
        torch.use_deterministic_algorithms(cfg.train.deterministic)  # either way: a process-wide flag
        if not cfg.train.deterministic and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        self.channels_last = channels_last
        self.amp_dtype = AMP_DTYPES[cfg.train.amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.extra_optimizers: list[tuple[torch.optim.Optimizer, object]] = []
        self.bar = None  # the running epoch's progress bar
        self.mean = torch.tensor(cfg.data.mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(cfg.data.std, device=self.device).view(1, -1, 1, 1) * 255
        self.epoch, self.step = 0, 0
        self.log = RunLog(self.out, self.info.is_main, cfg.train.tensorboard)
        slow = slow_bf16_settings(cfg, self.device)
        if slow and self.info.is_main:
            print(f"warning: {' and '.join(slow)} on a CPU without native bfloat16 (oneDNN reports no bf16 "
                  "support): bf16 convolutions are emulated, many times slower than float32 here", flush=True)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank

    # -- set-up helpers for subclasses ---------------------------------------------------------------
    def seed_rank_streams(self) -> torch.Generator:
        """After the model is built: per-rank global streams, and the trainer's generator for the
        device-side random draws (KeepAugment boxes), on the device."""
        seed = self.cfg.train.seed + 1000 * self.info.rank
        torch.manual_seed(seed)
        return torch.Generator(device=self.device).manual_seed(seed + 1)

    def step_function(self, fn, compile: bool, backend: str = "inductor"):
        """``fn(*tensors, source)``, the step's graph-safe part (:mod:`core.engine.compiled`), as a function
        ``f(*tensors, generator=...)``: eager, or with ``compile`` compiled whole by ``backend`` (inductor:
        mode ``reduce-overhead`` on CUDA, i.e. CUDA graphs). :attr:`step_path` says which, for the run's log."""
        if not compile:  # step_path stays "eager step"
            return lambda *tensors, generator: fn(*tensors, generator)
        mode = "reduce-overhead" if self.device.type == "cuda" and backend == "inductor" else None
        one = not self.info.distributed
        self.step_path = (f"model.compile: the step's KeepAugment, forward and loss compiled by {backend}"
                          f"{' (mode reduce-overhead: CUDA graphs)' if mode else ''} as "
                          f"{'one graph' if one else 'graphs split at the DDP gradient buckets'}; the first step "
                          f"of each batch shape runs eagerly to record its random draws")
        return CompiledStep(fn, backend=backend, mode=mode, fullgraph=one)

    def graph_blockers(self) -> list[str]:
        """Why the step cannot run as one CUDA graph in this run (empty: it can); a trainer adds what its own
        step needs in :meth:`step_blockers`."""
        if not self.cfg.train.cuda_graph:
            return ["train.cuda_graph=false"]
        if self.device.type != "cuda":
            return [f"CUDA only, this run is on {self.device.type}"]
        reasons = []
        if self.amp_dtype == torch.float16:
            reasons.append("train.amp=fp16: the GradScaler's dynamic loss scale is not captured")
        if self.info.distributed:
            reasons.append("DDP: gradient all-reduce inside a captured step is not supported by these trainers")
        return reasons + self.step_blockers()

    def step_blockers(self) -> list[str]:
        """What in this trainer's step keeps it from a CUDA graph on an otherwise eligible CUDA run."""
        return []

    def use_graphs(self, graphs=None, warmup: int = WARMUP_STEPS) -> None:
        """Run the step as one captured graph from now on (:class:`~core.engine.graphed.GraphedStep`;
        ``graphs``: :class:`~core.engine.graphed.CudaGraphs` on the trainer's generator by default)."""
        self.graphed = GraphedStep(self.run_step, graphs or CudaGraphs(self.generator), self.device,
                                   self.optimizers(), warmup)
        self.step_path = (f"CUDA graph: the whole step (KeepAugment, forward, loss, backward, optimizer) captured "
                          f"after {warmup} eager warm-up steps and replayed; a batch of other shapes (an epoch's "
                          f"last, partial batch) runs eagerly")

    def prepare_step(self) -> None:
        """Before the first step: the learning rates of fused optimizers on the device (the same numbers for an
        eager and a captured step), and the step's path: one CUDA graph where :meth:`graph_blockers` allow
        (unless one is set already), else :attr:`step_path` says why not."""
        if self.optimizer_options().get("fused"):
            lr_on_device(self.optimizers(), self.device)
        if self.graphed is not None:
            return
        blockers = self.graph_blockers()
        if not blockers:
            self.use_graphs()
        elif self.step_path == "eager step":  # a compiled step (step_function) names its own path
            self.step_path = f"eager step (not a CUDA graph: {'; '.join(blockers)})"

    def distribute(self, module: nn.Module) -> nn.Module:
        """``module`` under DDP when this is one of several processes (gradients of every parameter of
        ``module`` are averaged, so keep the early head / centres inside it), else itself."""
        if not self.info.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, *(opt for opt, _ in self.extra_optimizers)]

    def optimizer_options(self) -> dict:
        """Fused kernels on CUDA (a few launches per step; an fp16 GradScaler's found-inf flag stays on the
        device; see :meth:`prepare_step` for the learning rates), the multi-tensor (foreach) path on the CPU."""
        return {"fused": True} if self.device.type == "cuda" else {"foreach": True}

    def current_lr(self) -> float:
        """The schedule's learning rate (of ``optimizer``'s first group) as the float it computed: the same on
        every device (a fused CUDA optimizer reads a float32 copy, :func:`~core.engine.graphed.lr_on_device`)."""
        return self.scheduler.base_lrs[0] * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)

    def limit_steps(self, steps: int) -> int:
        """``steps`` per epoch, capped by ``train.max_steps_per_epoch``."""
        return min(steps, self.cfg.train.max_steps_per_epoch or steps)

    # -- the step's pieces ---------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` from the loader -> normalised float on the device."""
        x = (x.to(self.device, non_blocking=True).float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True)

    def autocast(self):
        # no cast cache under a CUDA graph: a cached cast made at capture would be replayed stale
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None,
                              cache_enabled=self.graphed is None)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward and update, the same for every trainer: zero the gradients, backward through the grad
        scaler, clip the unscaled gradients' global norm (``clip_norm`` > 0, over ``module``'s parameters;
        on the device, no host read), step ``optimizer`` then each ``extra_optimizers`` entry
        ``(optimizer, prepare)`` (``prepare()`` runs on its unscaled gradients first), update the scaler.
        A per-step schedule steps after the step (:meth:`step_batch`), outside a captured graph."""
        for opt in self.optimizers():
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_norm, foreach=True)
        self.scaler.step(self.optimizer)
        for opt, prepare in self.extra_optimizers:
            self.scaler.unscale_(opt)
            prepare()
            self.scaler.step(opt)
        self.scaler.update()

    # -- what a subclass supplies --------------------------------------------------------------------
    def run_step(self, batch) -> StepStats:
        raise NotImplementedError

    def train_batches(self):
        raise NotImplementedError

    def evaluate(self) -> dict:
        raise NotImplementedError

    def state(self) -> dict:
        """The subclass's part of a checkpoint (weights, extra optimizers, ...)."""
        raise NotImplementedError

    def load_state(self, ckpt: dict) -> None:
        raise NotImplementedError

    def epoch_metrics(self, sums: list[float], steps: int, seconds: float, skipped: int) -> dict:
        """The epoch's metrics row from every rank's summed ``stat_names`` values."""
        raise NotImplementedError

    def progress_postfix(self, sums: list[float], steps: int, seconds: float) -> dict:
        """This rank's running figures for the progress bar."""
        return {}

    def record_evaluation(self, metrics: dict) -> None:
        """After an evaluation (e.g. ``best.pt`` or ``eval.json``)."""

    @property
    def eval_every(self) -> int:
        return self.cfg.train.eval_every

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Train from the start or from ``last.pt`` (``resume``) to ``train.epochs``; returns the last
        epoch's metrics."""
        self.start_fit(resume, overwrite)
        metrics: dict = {}
        for h in self.hooks:
            h.before_train(self)
        try:
            while self.epoch < self.cfg.train.epochs:
                metrics = self.train_epoch()
                if self.schedule_per == "epoch":
                    self.scheduler.step()
                self.epoch += 1
                if self.epoch % self.eval_every == 0 or self.epoch == self.cfg.train.epochs:
                    metrics.update(self.evaluate())
                    self.record_evaluation(metrics)
                self.save_checkpoint()
                self.log_epoch({self.counter: getattr(self, self.counter), **metrics})
                for h in self.hooks:
                    h.after_epoch(self, self.epoch)
                if self.cfg.train.stop_after_epoch and self.epoch >= self.cfg.train.stop_after_epoch:
                    break
        finally:
            for h in self.hooks:
                h.after_train(self)
        return self.finish_fit(metrics)

    def train_epoch(self) -> dict:
        """One epoch (or UDA round) of :meth:`run_step`; every rank's sums reduced into the epoch's row."""
        self.begin_epoch()
        skipped = []
        for batch in itertools.islice(self.train_batches(), self.steps_per_epoch):
            skipped += batch.skipped
            if not batch.empty:
                self.step_batch(batch)
        self.device_check()
        self.bar.close()
        seconds = time.perf_counter() - self.epoch_start
        if skipped:  # each rank names the files it skipped (rank 0 also into train.log)
            rank = f"rank {self.info.rank}: " if self.info.distributed else ""
            line = (f"{rank}{self.unit_name} {self.epoch + 1}: skipped {len(skipped)} unreadable image(s): "
                    f"{', '.join(sorted(set(skipped)))}")
            self.train_log.line(line) if self.info.is_main else print(line, flush=True)
        sums = all_reduce_sum(torch.cat([self.totals, self.totals.new_full((1,), len(skipped))]), self.info)
        *sums, n_skipped = sums.tolist()
        return self.epoch_metrics(sums, self.done, seconds, int(n_skipped))

    def begin_epoch(self) -> None:
        """Train mode, this rank's running sums (on the device), the clock and the progress bar."""
        self.module.train()
        self.totals = torch.zeros(len(self.stat_names), device=self.device)
        self.done = 0
        self.epoch_start = time.perf_counter()
        self.start_progress()

    def step_batch(self, batch) -> StepStats:
        """The loop's body: :meth:`run_step` (replayed as a CUDA graph with ``train.cuda_graph``), a per-step
        schedule, the running sums, :meth:`finish_step` - no host sync."""
        stats = self.graphed(batch) if self.graphed is not None else self.run_step(batch)
        self.last_stats = stats  # hooks may read it (on the device)
        if self.schedule_per == "step":
            self.scheduler.step()
        self.totals += stats.sums
        self.done += 1
        self.finish_step(stats.loss, batch)
        return stats

    def finish_step(self, loss: torch.Tensor, batch) -> None:
        """After an optimisation step, without waiting for the device: note the first step whose loss is
        non-finite (on the device), count the step, run the hooks' ``after_step``, refresh the progress
        bar, and every ``train.check_every`` steps read the device (:meth:`device_check`)."""
        bad = ~torch.isfinite(loss.detach())
        self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), self.step + 1, self.first_bad_step)
        self.step += 1
        if self.log.tensorboard and self.step % 10 == 0:
            self.pending_scalars.append((self.step, loss.detach().float()))
        for h in self.hooks:
            h.after_step(self, batch)
        self.bar.update()
        if self.step % self.cfg.train.check_every == 0:
            self.device_check()
        else:
            self.refresh_progress()

    def start_checks(self) -> None:
        """Reset the device-side bookkeeping that :meth:`finish_step` fills and :meth:`device_check` reads."""
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.pending_scalars: list[tuple[int, torch.Tensor]] = []

    def device_check(self) -> None:
        """The one place a training epoch waits for the device (every ``train.check_every`` steps and at the
        epoch end): stop if any rank saw a non-finite loss since the start, write the pending TensorBoard
        scalars, show the running figures. The weights of up to ``check_every - 1`` steps after a bad one
        are discarded with the process; ``last.pt`` (written at epoch ends, after a check) stays good."""
        never = 2**62
        first = torch.where(self.first_bad_step < 0, never, self.first_bad_step)
        if self.info.distributed:  # the earliest bad step of any rank
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
        bad_step = int(first)
        if bad_step != never:
            raise FloatingPointError(f"non-finite loss at step {bad_step} ({self.unit_name} {self.epoch + 1}); "
                                     f"stopping; the last good checkpoint is {self.out / 'last.pt'}")
        if self.pending_scalars:
            values = torch.stack([v for _, v in self.pending_scalars]).tolist()
            for (step, _), value in zip(self.pending_scalars, values):
                self.log.scalar("train/loss", value, step)
            self.pending_scalars.clear()
        if self.bar is not None and not self.bar.disable and self.done:
            self.show_progress(self.totals.tolist(), self.done, time.perf_counter() - self.epoch_start)

    # -- progress bar --------------------------------------------------------------------------------
    def start_progress(self) -> None:
        """The epoch's progress bar (rank 0, unless ``train.progress`` is off)."""
        from tqdm import tqdm

        self.running_epoch = self.epoch + 1  # the epoch an interrupt lands in (self.epoch counts finished ones)
        self.bar = tqdm(total=self.steps_per_epoch, desc=f"{self.unit_name} {self.epoch + 1}/{self.cfg.train.epochs}",
                        unit="step", disable=not (self.info.is_main and self.cfg.train.progress), leave=False)
        self.last_refresh, self.pending_copy = time.perf_counter(), None

    def refresh_progress(self) -> None:
        """Every :data:`PROGRESS_SECONDS` without waiting for the device: show the running sums copied at
        the previous refresh if the copy has landed, then start a copy of the current ones."""
        if self.bar.disable or time.perf_counter() - self.last_refresh < PROGRESS_SECONDS:
            return
        self.last_refresh = now = time.perf_counter()
        if self.pending_copy is not None:
            host, event, steps, at = self.pending_copy
            if event is None or event.query():
                self.show_progress(host.tolist(), steps, at - self.epoch_start)
        host = torch.empty(self.totals.shape, pin_memory=self.device.type == "cuda")
        host.copy_(self.totals, non_blocking=True)
        event = torch.cuda.current_stream().record_event() if self.device.type == "cuda" else None
        self.pending_copy = (host, event, self.done, now)

    def show_progress(self, sums: list[float], steps: int, seconds: float) -> None:
        self.bar.set_postfix(self.progress_postfix(sums, steps, max(seconds, 1e-9)), refresh=False)

    # -- run directory, checkpoints, logs ------------------------------------------------------------
    def start_fit(self, resume: bool, overwrite: bool = False) -> bool:
        """Apply the run-directory rules (:mod:`core.engine.run_dir`), resume from ``last.pt`` if asked and
        there is one, write the resolved config and the environment, and say where the run lives. Returns
        whether the run resumed."""
        self.train_log = TrainLog(self.out, self.info.is_main)
        resume = run_dir.prepare(self.out, resume, overwrite, self.info.is_main)
        barrier(self.info)
        if resume:
            self.resume()
        self.start_checks()
        self.prepare_step()
        if self.info.is_main:
            save_config(self.cfg, self.out / "config.yaml")
            run_dir.record_env(self.out, self.device, self.info.world_size, resume)
            where = f"resumed at {self.counter} {getattr(self, self.counter)}" if resume else "new run"
            self.train_log.line(f"run directory {self.out} ({where}; {self.info.world_size} process(es) on "
                                f"{self.device.type})")
            self.train_log.line(self.step_path)
            if resume and self.resume_changes:
                self.train_log.line(f"resuming with changed settings: {'; '.join(self.resume_changes)}")
        return resume

    def checkpoint(self) -> dict:
        """The full training state: the subclass's :meth:`state`, the shared optimizer / scheduler / scaler,
        progress, every rank's RNG states (a collective) and the config."""
        return {**self.state(), "optimizer": lr_as_float(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "rng": gather_rng_states(self.generator, self.info), "config": to_dict(self.cfg)}

    def save_checkpoint(self) -> None:
        """``last.pt`` (atomically, rank 0; the state is built collectively) and, every ``train.keep_every``
        epochs, a copy ``epoch_NNNN.pt``."""
        save_on_main(self.checkpoint(), self.out / "last.pt", self.info)
        self.saved_epoch = self.epoch
        keep = self.cfg.train.keep_every
        if keep and self.epoch % keep == 0 and self.info.is_main:
            shutil.copyfile(self.out / "last.pt", self.out / f"epoch_{self.epoch:04d}.pt")

    def resume(self, path: str | Path | None = None) -> None:
        """Continue exactly from a checkpoint (default ``last.pt``): weights, optimizers, schedule, scaler,
        progress and this rank's RNG states."""
        ckpt = self.load_run_checkpoint(path or self.out / "last.pt")
        self.load_state(ckpt)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.saved_epoch = self.epoch
        restore_rng_states(ckpt["rng"], self.generator, self.info)
        self.log.truncate_after(self.epoch)

    def load_run_checkpoint(self, path: str | Path, only: tuple[str, ...] = ()) -> dict:
        """A checkpoint of this kind of run, after checking that its config fits (see
        :func:`core.engine.run_dir.check_resume_config`; keys a checkpoint predates get their defaults);
        allowed changes are kept in ``resume_changes`` for the log."""
        ckpt = load_checkpoint(path)
        stored = ckpt.get("config")
        if not isinstance(stored, dict):
            raise run_dir.RunDirError(f"{path} is not a training checkpoint of this project (no 'config')")
        try:
            stored = to_dict(from_dict(type(self.cfg), stored))
        except ConfigError:
            pass  # keys of another schema: the comparison below names them
        self.resume_changes = run_dir.check_resume_config(stored, to_dict(self.cfg), Path(path), only,
                                                          run_dir.may_change(self.cfg))
        return ckpt

    def log_epoch(self, row: dict) -> None:
        """The epoch's row: ``metrics.csv`` / TensorBoard, and one line on the terminal and in ``train.log``."""
        self.log.epoch(row)
        self.train_log.line(epoch_line(row, self.cfg.train.epochs, self.counter))

    def finish_fit(self, metrics: dict) -> dict:
        """End of ``fit``: a run that was already finished reports its last metrics; rank 0 lists the files."""
        self.log.close()
        if not metrics:
            metrics = {k: v for k, v in self.log.last_row().items() if k != self.counter}
        if self.info.is_main and self.out.is_dir():
            files = sorted(p.name + "/" * p.is_dir() for p in self.out.iterdir() if not p.name.startswith("."))
            self.train_log.line(f"finished at {self.counter} {getattr(self, self.counter)}; "
                                f"{self.out} holds {', '.join(files)}")
        return metrics
