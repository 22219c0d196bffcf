"""Run GPU code paths on a CPU-only machine with *fake* CUDA tensors and record every aten op.

:func:`fake_cuda_environment` enters ``FakeTensorMode`` (tensors created under ``torch.device("cuda")``
carry device ``cuda:0`` but no data); :class:`HostSyncRecorder` on top sees every aten op and notes the
ones that would make the host wait for the device or copy between host and device. Each violation
names its *pattern* (``Violation.pattern``, one of :data:`PATTERNS`; the self-test in
``tests/core/test_fake_cuda.py`` triggers every one of them, and fails if one is added without a case):

- ops that read a device value on the host (:data:`SYNC_OPS`; the same op on host tensors only waits for
  nothing, e.g. a CPU optimizer state's ``step.item()``): ``_local_scalar_dense`` (``.item()``,
  ``if tensor:``, ``int(t)``, ``.tolist()``), ``equal`` / ``allclose``, ``nonzero`` / ``masked_select`` /
  ``unique*`` / ``bincount`` / ``repeat_interleave`` (the output size depends on the data), ``histc``,
  ``multinomial`` (validates the distribution with ``.item()``), ``_linalg_check_errors`` (``torch.linalg``
  functions without ``_ex`` read their ``info`` tensor on the host);
  boolean-mask indexing (:data:`INDEX_OPS` with a bool / uint8 index);
- copies between the CPU and the device (``_to_copy`` / ``copy_`` with different devices, other than
  0-dim CPU scalars that a kernel takes by value), and any op that mixes CPU and CUDA tensors. With
  ``allow_async_h2d`` a ``non_blocking=True`` host-to-device copy is allowed from memory the step was
  *given* (a worker loader's pinned batch), not from host memory the step made itself (pageable: the
  copy blocks like a plain one) unless that memory is pinned;
- printing / formatting a device tensor (``print``, ``str``, ``repr``, f-strings: ``torch._tensor_str``
  copies the values to the host), which fake tensors would otherwise print without an op.

Composite ops (``item``, ``is_nonzero``, ``argwhere``, ``nonzero_numpy``, ``tolist``) never reach a
dispatch mode: they are seen as the op they decompose into (``_local_scalar_dense``, ``nonzero``).

:meth:`HostSyncRecorder.kernels` lists the recorded ops that launch device work (not views, allocations or
host scalars): the kernel budgets of ``tests/classification/test_kernel_budget.py``. The zero-gradient
stand-ins below run unrecorded.

The recorder also keeps each op's input dtypes (``dtypes``, aligned with ``ops``; see
:meth:`HostSyncRecorder.ran`), so a test can check that, e.g., a convolution really ran in bf16.

What fake tensors cannot do without a driver - and how that is covered instead, never silently:

- **autograd**: the engine asks the CUDA driver for the device's primary context when a graph holds
  CUDA tensors (``GraphTask::stash_current_streams``), which fails with no GPU. Inside
  :func:`fake_cuda_environment`, ``torch.autograd.grad`` and ``torch.autograd.backward`` are therefore
  replaced by functions that return / accumulate zeros of the right shape and device (a leaf's ``.grad``),
  so everything around the backward (the forward, the saliency post-processing, the optimizer step) runs
  on fake CUDA. The backward's own ops are checked for sync ops on real CPU tensors by
  :func:`record_backward_cpu` (which ops a backward runs does not depend on the device), and the whole
  step runs under ``torch.cuda.set_sync_debug_mode("error")`` in the CUDA-marked tests and
  ``tools/gpu_check.py``.
- **CUDA generators**: ``torch.Generator(device="cuda")`` needs a driver; tests pass a CPU generator
  (fake random kernels never read a generator's state).
- **building a trainer**: it is built on the CPU and moved with :func:`move_to_fake_cuda`, which also turns
  its CPU ``foreach`` optimizers into the fused ones it would build on CUDA (their update kernels get a
  do-nothing fake implementation: fake tensors hold no data), so an fp16 step's GradScaler hands them its
  found-inf flag on the device as on a GPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

# Ops that read a device value on the host. (Composite ops such as ``item`` or ``argwhere`` are not listed:
# they never reach a dispatch mode, see the module docstring.)
SYNC_OPS = frozenset({
    "_local_scalar_dense", "equal", "allclose", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
    "unique_consecutive", "bincount", "histc", "repeat_interleave", "_assert_scalar", "_cudnn_ctc_loss",
    "_linalg_check_errors", "multinomial",
})
_SYNC_REASONS = {
    "_linalg_check_errors": "torch.linalg checks its info tensor on the host (sync); use the *_ex variant",
    "multinomial": "validates the distribution on the host (.item(): sync)",
}
# Ops that launch no device kernel: allocations and host-side scalars (views are told apart by ``is_view``).
NOT_KERNELS = frozenset({"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "scalar_tensor",
                         "lift_fresh", "_local_scalar_dense"})
INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index", "_unsafe_index_put"})

# Every pattern the recorder can report (``Violation.pattern``) -> what it means.
PATTERNS: dict[str, str] = {
    **{f"sync:{op}": _SYNC_REASONS.get(op, "reads a device value on the host (sync)") for op in sorted(SYNC_OPS)},
    **{f"bool-index:{op}": "boolean-mask indexing (nonzero: sync)" for op in sorted(INDEX_OPS)},
    "copy:to-host": "_to_copy from the device to the host (.cpu(), .to('cpu'))",
    "copy:to-device": "blocking _to_copy from the host to the device (.to('cuda'), torch.tensor(..., device=))",
    "copy:unpinned-non-blocking": "non_blocking=True copy of host memory made in the step (pageable: blocks)",
    "copy_:cross-device": "copy_ between the host and the device (t[i] = python value, t.copy_(cpu_tensor))",
    "mixed-devices": "an op mixing CPU and device tensors (the CPU operand is copied over: sync)",
    "format": "printing / formatting a device tensor (copies it to the host: sync)",
    "data-dependent": "data-dependent output (sync); the run stopped there",
}


def _base_name(func) -> str:
    return func._schema.name.split("::")[-1]


@dataclass
class Violation:
    op: str
    reason: str
    pattern: str = ""  # a key of PATTERNS

    def __str__(self) -> str:
        return f"{self.op}: {self.reason}"


def _violation(op: str, pattern: str, detail: str = "") -> Violation:
    return Violation(op, detail or PATTERNS[pattern], pattern)


def _pinned(t: torch.Tensor) -> bool:
    try:
        return bool(t.is_pinned())
    except RuntimeError:  # no accelerator: nothing can be pinned
        return False


_ACTIVE: list[HostSyncRecorder] = []  # entered recorders, innermost last (the formatting hooks report to them)
_FORMAT_ORIGINALS: dict[str, object] = {}


def _note_format(t) -> None:
    if not isinstance(t, torch.Tensor) or t.device.type in ("cpu", "meta"):
        return
    for rec in _ACTIVE:
        if not rec.backward_only or torch._C._current_graph_task_id() != -1:
            rec.violations.append(_violation(f"format {tuple(t.shape)} {t.device.type} tensor", "format"))


def _hooked_str(self, *args, **kwargs):
    _note_format(self)
    return _FORMAT_ORIGINALS["_str"](self, *args, **kwargs)


def _hooked_format(self, format_spec):
    _note_format(self)
    if isinstance(self, torch._subclasses.fake_tensor.FakeTensor):  # no value to format: the spec is dropped
        format_spec = ""
    return _FORMAT_ORIGINALS["__format__"](self, format_spec)


def _install_format_hooks() -> None:
    """Report printing of device tensors: ``torch._tensor_str._str`` (``repr`` / ``str`` / ``print``, which
    fake tensors answer without an op) and ``Tensor.__format__`` (f-strings with a format spec)."""
    if not _FORMAT_ORIGINALS:
        _FORMAT_ORIGINALS["_str"] = torch._tensor_str._str
        _FORMAT_ORIGINALS["__format__"] = torch.Tensor.__format__
        torch._tensor_str._str = _hooked_str
        torch.Tensor.__format__ = _hooked_format


def _remove_format_hooks() -> None:
    if _FORMAT_ORIGINALS:
        torch._tensor_str._str = _FORMAT_ORIGINALS.pop("_str")
        torch.Tensor.__format__ = _FORMAT_ORIGINALS.pop("__format__")


@dataclass
class HostSyncRecorder(TorchDispatchMode):
    """Records every aten op (``ops``, with its input dtypes in ``dtypes``) and the host syncs / cross-device
    copies among them (``violations``, each with its pattern, see :data:`PATTERNS`).

    Args:
        allow_async_h2d: allow ``non_blocking=True`` host-to-device copies of host memory given to the step
            (a worker loader's pinned batch, or views of it); host memory made inside the recorded region
            is pageable (unless pinned), so its non-blocking copy is still reported.
    """

    allow_async_h2d: bool = False
    backward_only: bool = False  # record only ops the autograd engine runs (a backward pass)
    ops: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    dtypes: list[tuple[torch.dtype, ...]] = field(default_factory=list)  # input tensors' dtypes, per op
    launches: list[bool] = field(default_factory=list)  # per op: does it launch device work (see kernels())
    paused: bool = False  # the zero-gradient stand-ins run unrecorded

    def __post_init__(self) -> None:
        super().__init__()
        self._made = WeakIdKeyDictionary()  # host tensors created inside the recorded region

    def __enter__(self):
        _ACTIVE.append(self)
        _install_format_hooks()
        return super().__enter__()

    def __exit__(self, exc_type, exc_val, exc_tb):
        try:
            return super().__exit__(exc_type, exc_val, exc_tb)
        finally:
            _ACTIVE.remove(self)
            if not _ACTIVE:
                _remove_format_hooks()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused or (self.backward_only and torch._C._current_graph_task_id() == -1):
            return func(*args, **kwargs)
        name = _base_name(func)
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        self.ops.append(str(func))
        self.launches.append(str(func).startswith("aten.") and not getattr(func, "is_view", False)
                             and name not in NOT_KERNELS)
        self.dtypes.append(tuple(t.dtype for t in tensors))
        self._check(func, name, args, kwargs)
        out = func(*args, **kwargs)
        if not getattr(func, "is_view", False):  # a view shares its base's memory (pinned or not)
            given = {id(t) for t in tensors}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.device.type == "cpu" and id(t) not in given:
                    self._made[t] = True
        return out

    def kernels(self) -> list[str]:
        """The recorded aten ops that launch device work: not views, allocations or host scalars (nor the
        ``prim`` ops of fake tensors' own bookkeeping)."""
        return [op for op, launches in zip(self.ops, self.launches) if launches]

    def ran(self, op: str, dtype: torch.dtype) -> bool:
        """Whether an op whose name contains ``op`` (e.g. ``"convolution"``) ran with an input of ``dtype``."""
        return any(op in name and dtype in dtypes for name, dtypes in zip(self.ops, self.dtypes))

    def _check(self, func, name: str, args, kwargs) -> None:
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_host = bool(tensors) and all(t.device.type == "cpu" for t in tensors)  # .item() of a host tensor
        if name in SYNC_OPS and not on_host:
            self.violations.append(_violation(str(func), f"sync:{name}"))
        if name in INDEX_OPS:
            idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in idx or ()):
                self.violations.append(_violation(str(func), f"bool-index:{name}"))
        devices = {t.device.type for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
        if name == "_to_copy":
            target = kwargs.get("device")
            src = args[0].device.type
            if target is not None and torch.device(target).type != src:
                dst = torch.device(target).type
                detail = f"copy {src} -> {dst}"
                if dst == "cpu":
                    self.violations.append(_violation(str(func), "copy:to-host", detail))
                elif not (self.allow_async_h2d and src == "cpu" and kwargs.get("non_blocking", False)):
                    self.violations.append(_violation(str(func), "copy:to-device", detail))
                elif args[0] in self._made and not _pinned(args[0]):
                    self.violations.append(_violation(
                        str(func), "copy:unpinned-non-blocking",
                        f"non-blocking copy {src} -> {dst} of pageable host memory made in the step (it blocks)"))
            return
        if name == "copy_" and len(args) >= 2 and args[0].device.type != args[1].device.type:
            self.violations.append(_violation(
                str(func), "copy_:cross-device", f"copy {args[1].device.type} -> {args[0].device.type}"))
            return
        if len(devices) > 1:
            self.violations.append(_violation(str(func), "mixed-devices", f"mixes devices {sorted(devices)}"))


@contextlib.contextmanager
def _unrecorded():
    """Pause every active recorder (the stand-ins' own ops are not the step's)."""
    states = [(rec, rec.paused) for rec in _ACTIVE]
    for rec, _ in states:
        rec.paused = True
    try:
        yield
    finally:
        for rec, paused in states:
            rec.paused = paused


def _zero_grad(outputs, inputs, *args, **kwargs):
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    with _unrecorded():
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
    with _unrecorded():
        for leaf in _leaves(roots):
            leaf.grad = torch.zeros_like(leaf) if leaf.grad is None else leaf.grad + 0


def _register_fused_optimizer_fakes() -> None:
    """The fused optimizers' update kernels have no fake-tensor implementation; on fake tensors (no data)
    an in-place update does nothing, so register exactly that (once per process; real tensors never see it)."""
    for op in ("_fused_sgd_", "_fused_adam_", "_fused_adamw_"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", "Meta"):
            try:
                torch.library.register_fake(f"aten::{op}", lambda *args, **kwargs: None)
            except RuntimeError:  # registered already
                pass


@contextlib.contextmanager
def fake_cuda_environment(monkeypatch):
    """``FakeTensorMode`` plus the patches that let GPU code paths run in it on a machine without a driver:
    CUDA autocast allowed (bf16), and the zero-gradient stand-ins for the autograd engine (module doc)."""
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.autograd, "grad", _zero_grad)
    monkeypatch.setattr(torch.autograd, "backward", _zero_backward)
    _register_fused_optimizer_fakes()
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
    moved: set[int] = set()  # ids of the new parameters
    modules = [v for v in vars(trainer).values() if isinstance(v, torch.nn.Module)]
    for module in modules:
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None and id(p) not in moved:  # a module reached twice (backbone inside module)
                    if id(p) not in new:
                        new[id(p)] = (p, torch.nn.Parameter(convert(p.detach()), requires_grad=p.requires_grad))
                    m._parameters[name] = new[id(p)][1]
                    moved.add(id(new[id(p)][1]))
            for name, b in list(m._buffers.items()):
                if b is not None and b.device.type == "cpu":
                    m._buffers[name] = convert(b)
    for opt in (v for v in vars(trainer).values() if isinstance(v, torch.optim.Optimizer)):
        assert not opt.state, "move the trainer before its first step"
        for group in opt.param_groups:
            group["params"] = [new[id(p)][1] for p in group["params"]]
            if group.get("foreach") and "fused" in group:  # the fused kernels a trainer takes on CUDA
                group.update(foreach=None, fused=True)
                opt.defaults.update(foreach=None, fused=True)
                opt._step_supports_amp_scaling = True  # the GradScaler hands it its scale and found-inf flag
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
        rec.violations.append(_violation(str(err), "data-dependent"))
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
