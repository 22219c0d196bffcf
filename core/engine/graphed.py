"""The whole training step as one CUDA graph (``train.cuda_graph``).

:class:`GraphedStep` wraps a trainer's ``run_step`` (the saliency pass, selection and cut, forward, loss,
backward, clipping and the optimizers): the first ``warmup`` steps run eagerly on a side stream (cuDNN picks
its kernels, the optimizers create their state), the next one is captured into a graph from static device
buffers and replayed for it and every later batch of the same shapes: the batch is copied into the buffers,
the graph replayed, the step's statistics copied out. Only device work is replayed, so the step's Python side
must not change between steps: the learning rates become device tensors that the schedule fills in place
(:func:`make_capturable`; the scheduler steps outside the step, see ``TrainerBase.step_batch``), the random
draws come from the trainer's generator, registered with the graph, and the bookkeeping (running sums,
non-finite check, hooks, progress) stays outside; core's value checks are device asserts in the graph
(:func:`core._checks.deferred_checks`). A batch of other shapes (an epoch's last, partial batch)
runs eagerly. The graph's side is :class:`CudaGraphs`; a test can hand :class:`GraphedStep` another one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import fields, replace

import torch

from .._checks import deferred_checks
from .batch import Batch

WARMUP_STEPS = 3  # eager steps on a side stream before the capture (PyTorch's whole-network example uses 3)


def _parts(batch: Batch) -> list[tuple[str, torch.Tensor | Batch]]:
    """The filled tensor fields of ``batch`` and its nested batch (UDA's unlabelled half), by name."""
    return [(f.name, v) for f in fields(Batch) if isinstance(v := getattr(batch, f.name), (torch.Tensor, Batch))]


def batch_signature(batch: Batch) -> tuple:
    """The shapes and dtypes of every tensor of ``batch`` (its unlabelled part included): a graph replays
    only batches of the signature it was captured with."""
    return tuple((name, batch_signature(v)) if isinstance(v, Batch) else (name, tuple(v.shape), v.dtype)
                 for name, v in _parts(batch))


def static_copy(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with each tensor cloned on ``device``: the graph's input buffers."""
    return replace(batch, skipped=[], **{
        name: static_copy(v, device) if isinstance(v, Batch) else v.to(device, copy=True) for name, v in _parts(batch)})


def copy_into(static: Batch, batch: Batch) -> None:
    """Copy ``batch`` into the buffers ``static`` (asynchronous from pinned host memory)."""
    for name, v in _parts(batch):
        if isinstance(v, Batch):
            copy_into(getattr(static, name), v)
        else:
            getattr(static, name).copy_(v, non_blocking=True)


def lr_on_device(optimizers, device: torch.device) -> None:
    """Every param group's ``lr`` as a 0-dim float32 tensor on ``device``, which a captured fused optimizer
    reads at each replay and ``LRScheduler.step`` fills in place (a float would be frozen into the graph)."""
    for opt in optimizers:
        for group in opt.param_groups:
            lr = group["lr"]
            if not (isinstance(lr, torch.Tensor) and lr.device == device):
                group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)


def make_capturable(optimizers, device: torch.device) -> None:
    """Ready ``optimizers`` for a captured step: learning rates on the device (:func:`lr_on_device`) and
    ``capturable=True`` where a param group has the flag (Adam and its family refuse a capture without it;
    their fused kernels keep the step counts on the device either way; SGD has no flag)."""
    lr_on_device(optimizers, device)
    for opt in optimizers:
        for group in opt.param_groups:
            if "capturable" in group:
                group["capturable"] = True


def lr_as_float(state: dict) -> dict:
    """An optimizer ``state_dict`` with tensor learning rates as floats (checkpoints stay the same whichever
    path trained)."""
    groups = [{**g, "lr": float(g["lr"])} if isinstance(g["lr"], torch.Tensor) else g for g in state["param_groups"]]
    return {**state, "param_groups": groups}


class CudaGraphs:
    """The CUDA side of :class:`GraphedStep`: warm-up on a side stream, capture with the trainer's generator
    registered (its draws advance at every replay as in an eager step), replay."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator, self.graph = generator, None

    def warm(self, fn: Callable):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = fn()
        torch.cuda.current_stream().wait_stream(side)
        return out

    def capture(self, fn: Callable):
        """``fn``'s device work recorded, not run (the caller replays it)."""
        self.graph = torch.cuda.CUDAGraph()
        if self.generator is not None:
            self.graph.register_generator_state(self.generator)
        # thread_local: the DataLoader's pin-memory thread may allocate pinned memory meanwhile
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            return fn()

    def replay(self) -> None:
        self.graph.replay()


class GraphedStep:
    """``run_step(batch) -> StepStats`` as one captured graph (see the module docstring).

    Args:
        run_step: the trainer's step; it must not read the host or keep Python state between steps.
        graphs: :class:`CudaGraphs` (or a stand-in with ``warm`` / ``capture`` / ``replay``).
        device: where the input buffers live.
        optimizers: whose learning rates move to the device before the capture.
        warmup: eager steps before the capture.
    """

    def __init__(self, run_step: Callable, graphs, device: torch.device, optimizers=(), warmup: int = WARMUP_STEPS):
        self.run_step, self.graphs, self.device = run_step, graphs, device
        self.optimizers, self.warmup = list(optimizers), warmup
        self.warmed = self.replays = self.eager_steps = 0
        self.signature, self.static, self.outputs = None, None, None

    def __call__(self, batch: Batch):
        sig = batch_signature(batch)
        if self.signature is None:
            if self.warmed < self.warmup:
                self.warmed += 1
                return self.graphs.warm(lambda: self.run_step(batch))
            make_capturable(self.optimizers, self.device)
            self.signature, self.static = sig, static_copy(batch, self.device)
            with deferred_checks():  # value checks as device asserts, replayed with the step
                self.outputs = self.graphs.capture(lambda: self.run_step(self.static))
        elif sig != self.signature:  # e.g. the epoch's last, partial batch
            self.eager_steps += 1
            with warnings.catch_warnings():  # a capturable optimizer stepping uncaptured says so, harmlessly
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                return self.run_step(batch)
        else:
            copy_into(self.static, batch)
        self.graphs.replay()
        self.replays += 1
        # the outputs are overwritten by the next replay: the loop keeps its own copies
        return replace(self.outputs, loss=self.outputs.loss.clone(), sums=self.outputs.sums.clone())
