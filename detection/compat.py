"""What a Python-only detectron2 (``tools/install_detectron2.py``'s fallback) lacks, supplied on import.

Applied by ``import detection`` and only where needed; with detectron2 built from its GitHub source
both checks find nothing to do, so ``detection`` behaves the same on both install paths.

1. ``detectron2._C`` (the compiled ops) is missing: a stand-in module is registered. Its
   ``get_compiler_version`` / ``get_cuda_version`` / ``has_cuda`` answer for ``collect_env``; any
   other attribute (deformable conv, rotated-box IoU/ROIAlign, the fast COCO evaluator) raises
   :class:`MissingCompiledOp` naming the op. The ops v0.6 reaches through the dispatcher instead
   (``torch.ops.detectron2.nms_rotated``, used by RRPN and rotated heads) raise it too: the
   ``torch.ops.detectron2`` namespace is replaced by one whose unknown ops raise it. The six
   detectors of ``detection/configs`` never call them, and ``detection`` evaluates with pycocotools
   (``use_fast_impl=False``).
2. Pillow >= 10 removed ``Image.LINEAR``, which detectron2 v0.6 uses as a default argument at import
   time (fixed upstream after v0.6): it is aliased to ``Image.BILINEAR``, the same filter.

Also :func:`dependency_import_warnings`: the two deprecation notices our dependencies print when we import
them (on both install paths), silenced around those imports only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import torch

STANDIN_VERSION = "not built (Python-only detectron2: tools/install_detectron2.py fallback)"


# (message, category, module the warning is attributed to) of notices printed on every run that say nothing
# a user of ``detection`` can act on: fvcore.nn and detectron2.modeling call torch.jit.script at import
# (deprecated since torch 2.10), and detectron2.model_zoo imports pkg_resources (setuptools<81 is pinned).
KNOWN_IMPORT_WARNINGS = (
    (r"`torch\.jit\.script` is deprecated", FutureWarning, r"torch\.jit\._script"),
    (r"pkg_resources is deprecated as an API", UserWarning, r"detectron2\.model_zoo\.model_zoo"),
)


@contextlib.contextmanager
def dependency_import_warnings():
    """Ignore :data:`KNOWN_IMPORT_WARNINGS` inside the block; every other warning is shown as usual."""
    with warnings.catch_warnings():
        for message, category, module in KNOWN_IMPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


class MissingCompiledOp(RuntimeError):
    """A detectron2 C++/CUDA op was called in an install that has none."""


def _missing(qualified_name: str) -> MissingCompiledOp:
    return MissingCompiledOp(f"{qualified_name} is a compiled op, and this detectron2 was installed from Python "
                             "sources only (no deformable conv, rotated boxes or fast COCO evaluation). Install "
                             "detectron2 from its GitHub source to use it: python tools/install_detectron2.py "
                             "--mode source --force")


class _CompiledOpsStandIn(types.ModuleType):
    def __init__(self):
        super().__init__("detectron2._C", __doc__)
        self.__file__ = __file__
        self.get_compiler_version = self.get_cuda_version = lambda: STANDIN_VERSION
        self.has_cuda = lambda: False
        self.KEEPAUGMENT_STANDIN = True

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise _missing(f"detectron2._C.{name}")


class _DispatcherOpsStandIn(torch._ops._OpNamespace):
    """``torch.ops.detectron2`` without the compiled library: an op registered later (by anyone) is
    still found; any other name raises :class:`MissingCompiledOp` instead of an AttributeError."""

    KEEPAUGMENT_STANDIN = True

    def __getattr__(self, op_name: str):
        try:
            return super().__getattr__(op_name)
        except AttributeError:
            if op_name.startswith("__"):
                raise
            raise _missing(f"torch.ops.detectron2.{op_name}") from None


def has_compiled_ops() -> bool:
    """True when a real ``detectron2._C`` extension is installed."""
    mod = sys.modules.get("detectron2._C")
    if mod is not None:
        return not getattr(mod, "KEEPAUGMENT_STANDIN", False)
    return importlib.util.find_spec("detectron2._C") is not None


def needs_pillow_alias() -> bool:
    """True when this Pillow lacks ``Image.LINEAR`` and the installed detectron2 still uses it."""
    from PIL import Image

    if hasattr(Image, "LINEAR"):
        return False
    spec = importlib.util.find_spec("detectron2")  # the package only: its submodules are not imported
    transform = Path(spec.origin).parent / "data" / "transforms" / "transform.py"
    return transform.is_file() and "Image.LINEAR" in transform.read_text()


def apply() -> list[str]:
    """Apply the shims this install needs (idempotent); returns what was applied."""
    applied = []
    import detectron2
    from PIL import Image

    if needs_pillow_alias():
        Image.LINEAR = Image.BILINEAR
        applied.append("PIL.Image.LINEAR = PIL.Image.BILINEAR")

    if "detectron2._C" not in sys.modules and not has_compiled_ops():
        sys.modules["detectron2._C"] = detectron2._C = _CompiledOpsStandIn()
        applied.append("detectron2._C stand-in")
    if getattr(sys.modules.get("detectron2._C"), "KEEPAUGMENT_STANDIN", False) and \
            not getattr(torch.ops.detectron2, "KEEPAUGMENT_STANDIN", False):
        setattr(torch.ops, "detectron2", _DispatcherOpsStandIn("detectron2"))
        applied.append("torch.ops.detectron2 stand-in")
    return applied
