"""A CPU stand-in for CUDA graphs (:class:`core.engine.graphed.CudaGraphs`), so that the suite checks what
capturing the training step needs without a GPU.

``capture(fn)`` runs ``fn`` once under a dispatch mode that records every aten op with its arguments, then
undoes what it did (the tensors it wrote, the generator's state): a real capture records without running.
``replay()`` runs the recorded ops again on the same tensors, writing each op's fresh result into the tensor
the capture made, so later ops (and the caller) read the new values. As on a GPU, only tensor work is
replayed: a value the Python side computes per step (a float learning rate, a step count, a list it appends
to) stays what it was at capture, and reading a tensor on the host during the capture is an error.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

HOST_READS = {"_local_scalar_dense", "is_nonzero", "equal", "allclose"}


class HostRead(RuntimeError):
    """A host read of a device value inside the captured step (a CUDA graph capture fails on it)."""


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class _Frozen:
    """A tensor with its shape, strides and offset as the op saw them: a later in-place view op (``squeeze_``,
    ``unsqueeze_``) changes the tensor object's metadata, not what the recorded op used."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t, self.meta = t, (tuple(t.shape), t.stride(), t.storage_offset())

    def thaw(self) -> torch.Tensor:
        t = self.t
        return t if (tuple(t.shape), t.stride(), t.storage_offset()) == self.meta else t.as_strided(*self.meta)


def _freeze(tree):
    return tree_map(lambda v: _Frozen(v) if isinstance(v, torch.Tensor) else v, tree)


def _thaw(tree):
    return tree_map(lambda v: v.thaw() if isinstance(v, _Frozen) else v, tree)


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list = []
        self.made: set[int] = set()  # tensors the captured step created
        # the value before the step of every tensor it uses that existed before (op schemas do not mark
        # every write: native_batch_norm updates its running statistics unannotated)
        self.saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ in HOST_READS:
            raise HostRead(f"{func} reads a tensor on the host during the capture")
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and id(t) not in self.made and id(t) not in self.saved:
                self.saved[id(t)] = (t, t.detach().clone())
        out = func(*args, **kwargs)
        if torch.Tag.inplace_view in func.tags:  # squeeze_ and the like change metadata only: nothing to replay
            return out
        outs = tree_leaves(out)
        self.made.update(id(t) for t in outs if isinstance(t, torch.Tensor) and id(t) not in self.saved)
        self.ops.append((func, _freeze(args), _freeze(kwargs), _freeze(outs)))
        return out

    def restore(self) -> None:
        with torch.no_grad():
            for t, value in self.saved.values():
                t.copy_(value)


class EmulatedGraphs:
    """Drop-in for :class:`core.engine.graphed.CudaGraphs` on the CPU (see the module docstring)."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator, self.ops = generator, []

    def warm(self, fn):
        return fn()

    def capture(self, fn):
        state = None if self.generator is None else self.generator.get_state()
        recorder = _Recorder()
        with recorder:
            out = fn()
        recorder.restore()
        if state is not None:
            self.generator.set_state(state)
        self.ops = recorder.ops
        return out

    def replay(self) -> None:
        with torch.no_grad():
            for func, args, kwargs, outs in self.ops:
                fresh = tree_leaves(func(*_thaw(args), **_thaw(kwargs)))
                for old, new in zip(_thaw(outs), fresh):
                    if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor) and not _same_storage(old, new):
                        old.copy_(new)
