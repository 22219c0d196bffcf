"""Random draws that can be made before the step that uses them (a compiled or a CUDA-graph-captured step).

Every random tensor in ``core`` comes from :func:`uniform`, :func:`normal`, :func:`integers` or
:func:`permutation`, whose ``generator`` is a ``torch.Generator`` (or None: the global RNG), or:

- a :class:`DrawRecorder` wrapping one: it draws from the generator as usual and notes what was drawn
  (kind, shape, dtype, device); the list is the step's :class:`DrawPlan`;
- a :class:`Draws`: the tensors of a plan drawn beforehand (:meth:`DrawPlan.draw`), handed out in order.

A step that runs eagerly once with a recorder gives the plan; from then on, the plan's draws are made
outside the compiled or captured region and the step itself draws nothing, so ``torch.compile(...,
fullgraph=True)`` has no ``rand(generator=...)`` to break on. The same generator calls in the same order
make the same values: boxes and fills are bit-identical to an eager step with that generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DrawSpec:
    """One draw: ``kind`` (``"uniform"``, ``"normal"``, ``"integers"``, ``"permutation"``), its shape (the
    ``n`` of a permutation), dtype, device and, for integers, the ``[low, high)`` range."""

    kind: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    bounds: tuple[int, int] | None = None

    def draw(self, generator: torch.Generator | None) -> torch.Tensor:
        opts = dict(generator=generator, device=self.device)
        if self.kind == "uniform":
            return torch.rand(self.shape, dtype=self.dtype, **opts)
        if self.kind == "normal":
            return torch.randn(self.shape, dtype=self.dtype, **opts)
        if self.kind == "integers":
            return torch.randint(*self.bounds, self.shape, dtype=self.dtype, **opts)
        return torch.randperm(self.shape[0], **opts)


@dataclass(frozen=True)
class DrawPlan:
    """The draws of one step, in order."""

    specs: tuple[DrawSpec, ...]

    def draw(self, generator: torch.Generator | None = None) -> Draws:
        """Make the plan's draws now, from ``generator``, for a step that will draw nothing itself."""
        return Draws(tuple(spec.draw(generator) for spec in self.specs), self.specs)


@dataclass
class DrawRecorder:
    """Draws from ``generator`` and records what it drew (:attr:`plan`)."""

    generator: torch.Generator | None = None
    specs: list[DrawSpec] = field(default_factory=list)

    def take(self, spec: DrawSpec) -> torch.Tensor:
        self.specs.append(spec)
        return spec.draw(self.generator)

    @property
    def plan(self) -> DrawPlan:
        return DrawPlan(tuple(self.specs))


@dataclass
class Draws:
    """Tensors drawn beforehand (:meth:`DrawPlan.draw`), handed out in the order they were planned. Each take
    is checked against its spec, so a step that draws differently from its plan is an error, not a silent
    reuse of the wrong numbers."""

    tensors: tuple[torch.Tensor, ...]
    specs: tuple[DrawSpec, ...]
    used: int = 0

    def take(self, spec: DrawSpec) -> torch.Tensor:
        if self.used >= len(self.tensors) or self.specs[self.used] != spec:
            planned = self.specs[self.used] if self.used < len(self.specs) else "nothing"
            raise RuntimeError(f"draw {self.used} of the step is {spec}, but its plan has {planned}: the step "
                               f"draws differently from the eager step that recorded the plan (a changed batch "
                               f"shape or option needs a new plan)")
        self.used += 1
        return self.tensors[self.used - 1]


Source = torch.Generator | DrawRecorder | Draws | None


def _take(generator: Source, kind: str, shape, device, dtype: torch.dtype, bounds=None) -> torch.Tensor:
    spec = DrawSpec(kind, tuple(shape), dtype, torch.device(device or "cpu"), bounds)
    if isinstance(generator, (DrawRecorder, Draws)):
        return generator.take(spec)
    return spec.draw(generator)


def uniform(shape, generator: Source = None, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.rand``: U[0, 1)."""
    return _take(generator, "uniform", shape, device, dtype)


def normal(shape, generator: Source = None, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.randn``: N(0, 1)."""
    return _take(generator, "normal", shape, device, dtype)


def integers(low: int, high: int, shape, generator: Source = None, device=None,
             dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """``torch.randint``: integers in ``[low, high)``."""
    return _take(generator, "integers", shape, device, dtype, (low, high))


def permutation(n: int, generator: Source = None, device=None) -> torch.Tensor:
    """``torch.randperm``: a random permutation of ``0 .. n - 1``."""
    return _take(generator, "permutation", (n,), device, torch.int64)
