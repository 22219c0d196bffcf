"""Run GPU code paths on a CPU-only machine with *fake* CUDA tensors and record every aten op.

:func:`fake_cuda` enters ``FakeTensorMode`` (tensors created under ``torch.device("cuda")`` carry device
``cuda:0`` but no data) with :class:`HostSyncRecorder` on top, which sees every aten op and notes the
ones that would make the host wait for the device or copy between host and device:

- ops that read a device value on the host: ``_local_scalar_dense`` (``.item()``, ``if tensor:``,
  ``int(t)``), ``is_nonzero``, ``equal``, ``nonzero`` / ``masked_select`` / ``unique*`` (the output size
  depends on the data), boolean-mask indexing (``index`` / ``index_put_`` with a bool index);
- copies between the CPU and the device (``_to_copy`` / ``copy_`` with different devices, other than
  0-dim CPU scalars that a kernel takes by value), and any op that mixes CPU and CUDA tensors.

What fake tensors cannot do without a driver - and how that is covered instead, never silently:

- **autograd**: the engine asks the CUDA driver for the device's primary context when a graph holds
  CUDA tensors (``GraphTask::stash_current_streams``), which fails with no GPU. Inside :func:`fake_cuda`,
  ``torch.autograd.grad`` and ``torch.autograd.backward`` are therefore replaced by functions that return
  / accumulate zeros of the right shape and device (a leaf's ``.grad``), so everything around the backward
  (the forward, the saliency post-processing, the optimizer step) runs on fake CUDA. The backward's own
  ops are checked for sync ops on real CPU tensors by :func:`record_cpu` (which ops a backward runs does
  not depend on the device), and the whole step runs under ``torch.cuda.set_sync_debug_mode("error")``
  in the CUDA-marked tests and ``tools/gpu_check.py``.
- **CUDA generators**: ``torch.Generator(device="cuda")`` needs a driver; tests pass a CPU generator
  (fake random kernels never read a generator's state).
- **building a trainer**: it is built on the CPU and moved with :func:`move_to_fake_cuda`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

SYNC_OPS = frozenset({
    "_local_scalar_dense", "item", "is_nonzero", "equal", "allclose", "nonzero", "nonzero_numpy", "argwhere",
    "masked_select", "_unique", "_unique2", "unique_dim", "unique_consecutive", "bincount", "histc",
    "repeat_interleave", "_assert_scalar", "_cudnn_ctc_loss",
})
INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index", "_unsafe_index_put"})


def _base_name(func) -> str:
    return func._schema.name.split("::")[-1]


@dataclass
class Violation:
    op: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op}: {self.reason}"


@dataclass
class HostSyncRecorder(TorchDispatchMode):
    """Records every aten op (``ops``) and the host syncs / cross-device copies among them (``violations``).

    Args:
        allow_async_h2d: allow ``non_blocking=True`` host-to-device copies (a worker loader's pinned batch).
    """

    allow_async_h2d: bool = False
    backward_only: bool = False  # record only ops the autograd engine runs (a backward pass)
    ops: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.backward_only and torch._C._current_graph_task_id() == -1:
            return func(*args, **kwargs)
        name = _base_name(func)
        self.ops.append(str(func))
        self._check(func, name, args, kwargs)
        return func(*args, **kwargs)

    def _check(self, func, name: str, args, kwargs) -> None:
        if name in SYNC_OPS:
            self.violations.append(Violation(str(func), "reads a device value on the host (sync)"))
        if name in INDEX_OPS:
            idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in idx or ()):
                self.violations.append(Violation(str(func), "boolean-mask indexing (nonzero: sync)"))
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
        if name == "_to_copy":
            target = kwargs.get("device")
            src = args[0].device.type
            if target is not None and torch.device(target).type != src:
                if not (self.allow_async_h2d and src == "cpu" and kwargs.get("non_blocking", False)):
                    self.violations.append(Violation(str(func), f"copy {src} -> {torch.device(target).type}"))
            return
        if name == "copy_" and len(args) >= 2 and args[0].device.type != args[1].device.type:
            self.violations.append(Violation(str(func), f"copy {args[1].device.type} -> {args[0].device.type}"))
            return
        if len(devices) > 1:
            self.violations.append(Violation(str(func), f"mixes devices {sorted(devices)}"))


def _zero_grad(outputs, inputs, *args, **kwargs):
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    return tuple(torch.zeros_like(i) for i in inputs)


def _leaves(roots) -> list[torch.Tensor]:
    """The leaf tensors (parameters) an autograd graph accumulates into."""
    seen, stack, leaves = set(), [r.grad_fn for r in roots if r.grad_fn is not None], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.append(node.variable)
        stack.extend(n for n, _ in node.next_functions)
    return leaves


def _zero_backward(tensors, grad_tensors=None, *args, **kwargs):
    roots = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    for leaf in _leaves(roots):
        leaf.grad = torch.zeros_like(leaf) if leaf.grad is None else leaf.grad + 0


@contextlib.contextmanager
def fake_cuda_environment(monkeypatch):
    """``FakeTensorMode`` plus the patches that let GPU code paths run in it on a machine without a driver:
    CUDA autocast allowed (bf16), and the zero-gradient stand-ins for the autograd engine (module doc)."""
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.autograd, "grad", _zero_grad)
    monkeypatch.setattr(torch.autograd, "backward", _zero_backward)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def move_to_fake_cuda(trainer, mode: FakeTensorMode) -> None:
    """Move a trainer built on the CPU onto fake ``cuda:0``: every parameter and buffer of its modules, its
    optimizers' parameter lists, its normalisation constants, its device-resident data and its device.
    (Building it under fake mode instead would make its CPU-side data code - samplers, splits, PIL
    transforms - fake too, and that code reads values.)"""
    dev = torch.device("cuda", 0)

    def convert(t: torch.Tensor) -> torch.Tensor:
        return mode.from_tensor(t).to(dev)

    new: dict[int, tuple[torch.Tensor, torch.nn.Parameter]] = {}  # id(old) -> (old kept alive, new)
    modules = [v for v in vars(trainer).values() if isinstance(v, torch.nn.Module)]
    for module in modules:
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None:
                    if id(p) not in new:
                        new[id(p)] = (p, torch.nn.Parameter(convert(p.detach()), requires_grad=p.requires_grad))
                    m._parameters[name] = new[id(p)][1]
            for name, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[name] = convert(b)
    for opt in (v for v in vars(trainer).values() if isinstance(v, torch.optim.Optimizer)):
        assert not opt.state, "move the trainer before its first step"
        for group in opt.param_groups:
            group["params"] = [new[id(p)][1] for p in group["params"]]
    for loader in (getattr(trainer, "loader", None), getattr(trainer, "val_loader", None)):
        inner = getattr(loader, "loader", None)
        if hasattr(inner, "images"):  # a DeviceLoader behind the trainer's batches
            inner.images, inner.labels, inner.plan = convert(inner.images), convert(inner.labels), convert(inner.plan)
    trainer.mean, trainer.std = convert(trainer.mean), convert(trainer.std)
    trainer.device = trainer.info.device = dev


@contextlib.contextmanager
def record(allow_async_h2d: bool = False):
    """Record the ops run inside (under whatever mode is active) into a :class:`HostSyncRecorder`."""
    rec = HostSyncRecorder(allow_async_h2d=allow_async_h2d)
    with rec:
        yield rec


def run_recorded(fn, allow_async_h2d: bool = False) -> HostSyncRecorder:
    """Run ``fn()`` under a recorder. Fake tensors cannot produce a data-dependent value: such an op is
    recorded as a violation and ends the run (instead of raising)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    rec = HostSyncRecorder(allow_async_h2d=allow_async_h2d)
    try:
        with rec:
            fn()
    except (DataDependentOutputException, DynamicOutputShapeException) as err:
        rec.violations.append(Violation(str(err), "data-dependent output (sync); the run stopped there"))
    return rec


def record_backward_cpu(fn) -> HostSyncRecorder:
    """Run ``fn()`` on real CPU tensors (real autograd) and record the ops of its backward passes only (the
    forward has CPU-only branches, e.g. an immediate finiteness check): the sync-op check of a backward."""
    rec = HostSyncRecorder(backward_only=True)
    with rec:
        fn()
    return rec


def assert_sync_free(rec: HostSyncRecorder, what: str) -> None:
    assert rec.ops, f"{what}: no op was recorded"
    assert not rec.violations, f"{what}: " + "; ".join(map(str, rec.violations[:10]))
