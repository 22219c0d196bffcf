"""The graph-safe part of a training step, compiled whole (``model.compile=true``).

A trainer's step splits into a graph-safe function ``fn(*tensors, source)`` (KeepAugment with its saliency
pass, selection and cut, the forward and the loss: no host read, every random draw from ``source``, see
:mod:`core.draws`) and the rest (the backward and optimizer, bookkeeping). :class:`CompiledStep` compiles
``fn`` with ``torch.compile`` as one graph. Its draws are made outside the graph: the first call for each
input shape runs ``fn`` eagerly with a :class:`~core.draws.DrawRecorder` (the plan: which draws, in which
order), and every later call draws the plan from the trainer's generator before calling the compiled
graph, so the generator advances exactly as in an eager run (resume stays exact) and the boxes are the
ones an eager step would draw.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..draws import DrawPlan, DrawRecorder


class CompiledStep:
    """``fn(*tensors, source)`` compiled as one graph (``fullgraph``) with its draws planned beforehand.

    Args:
        fn: the graph-safe step; its last argument is the random source (a generator, a recorder or draws).
        backend, mode: ``torch.compile``'s (e.g. ``"inductor"`` and ``"reduce-overhead"``: CUDA graphs).
        fullgraph: one graph or an error (a DDP model is split at its gradient buckets: pass False).
    """

    def __init__(self, fn: Callable, backend: str = "inductor", mode: str | None = None, fullgraph: bool = True):
        self.fn = fn
        self.compiled = torch.compile(fn, backend=backend, mode=mode, fullgraph=fullgraph, dynamic=False)
        self.plans: dict[tuple, DrawPlan] = {}

    def __call__(self, *tensors: torch.Tensor | None, generator: torch.Generator | None):
        key = tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in tensors)
        plan = self.plans.get(key)
        if plan is None:  # a new input shape: run eagerly once to record which draws the step makes
            recorder = DrawRecorder(generator)
            out = self.fn(*tensors, recorder)
            self.plans[key] = recorder.plan
            return out
        return self.compiled(*tensors, plan.draw(generator))
