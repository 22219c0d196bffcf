"""Feature layouts at an early-head hook point, and the global average pool over the image positions.

Three layouts:

- ``"nchw"``: ``(B, C, H, W)`` feature maps (CNNs: ResNet, MobileNet, EfficientNet, ConvNeXt, RegNet);
- ``"nhwc"``: ``(B, H, W, C)`` channels-last stages (Swin: timm declares ``output_fmt="NHWC"``;
  torchvision's ``swin_t`` declares nothing);
- ``"tokens"``: ``(B, N, C)`` transformer tokens (ViT, DeiT); the first ``prefix_tokens`` of them (class,
  distillation and register tokens) are not image patches and are left out of the pool.

The layout is the one given (``layout=``), else the one the model declares (timm: the hook module's own
``output_fmt`` / ``flatten``, as on ``PatchEmbed``; the model's ``output_fmt`` for a hook point listed in its
``feature_info``, NCHW when it has none; NCHW for a hook module built only of 2-D convolutions, batch / group
norms, 2-D pooling and elementwise layers), else read from the shape only where nothing else is possible:
3-D is tokens, and a 4-D output is NCHW / NHWC when the head's channel count is in dim 1 / dim 3 but not
both. ``(B, 96, 96, 96)`` from torchvision's ``swin_t`` at 384 px is an error naming ``layout=``: never a
guess. The number of prefix tokens comes from ``prefix_tokens=``, timm's ``num_prefix_tokens`` or
torchvision's class token, checked against the declared patch count when the model has a fixed size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LAYOUTS = ("nchw", "nhwc", "tokens")
_FORMATS = {"NCHW": "nchw", "NHWC": "nhwc", "NLC": "tokens"}
_NCHW_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.Identity,
                nn.modules.dropout._DropoutNd)
_NCHW_MODULES = ("torch.nn.modules.activation", "torch.nn.modules.pooling")
_ELEMENTWISE_NAMES = ("StochasticDepth", "DropPath")  # torchvision.ops / timm.layers: a per-sample scalar


@dataclass(frozen=True)
class Declared:
    """What a model says about the output of one of its modules (None: it says nothing)."""

    layout: str | None = None
    channels: int | None = None
    prefix_tokens: int | None = None
    num_patches: int | None = None  # image tokens of a fixed-size model (None: any size)


def _format(fmt) -> str | None:
    return _FORMATS.get(str(getattr(fmt, "value", fmt))) if fmt is not None else None


def declared(net: nn.Module, at: str, point: nn.Module) -> Declared:
    """The layout, channels, prefix tokens and patch count that ``net`` declares for ``net.<at>``."""
    if getattr(point, "flatten", None) is True:  # timm PatchEmbed(flatten=True): (B, N, C) patches only
        return Declared("tokens", prefix_tokens=0)
    own = _format(getattr(point, "output_fmt", None))
    if own is not None:  # a module stating its own output format (timm PatchEmbed): before any prefix token
        return Declared(own, prefix_tokens=0 if own == "tokens" else None)
    info = next((i for i in getattr(net, "feature_info", None) or ()
                 if isinstance(i, dict) and i.get("module") == at), None)
    layout = (_format(getattr(net, "output_fmt", None)) or "nchw") if info is not None else None
    if layout is None and _convolutional(point):
        layout = "nchw"
    channels = info.get("num_chs") if info is not None else None
    return Declared(layout, channels if isinstance(channels, int) else None, _prefix(net), _patches(net))


def _convolutional(point: nn.Module) -> bool:
    """Every layer of ``point`` keeps the (B, C, H, W) layout: 2-D conv / norm / pooling or elementwise."""
    leaves = [m for m in point.modules() if next(m.children(), None) is None]
    return any(isinstance(m, _NCHW_LAYERS[:4]) for m in leaves) and all(
        isinstance(m, _NCHW_LAYERS) or type(m).__name__ in _ELEMENTWISE_NAMES
        or (type(m).__module__ in _NCHW_MODULES and not isinstance(m, nn.MultiheadAttention)) for m in leaves)


def _prefix(net: nn.Module) -> int | None:
    n = getattr(net, "num_prefix_tokens", None)  # timm: class + distillation + register tokens
    if isinstance(n, int):
        return n
    if isinstance(getattr(net, "class_token", None), torch.Tensor):  # torchvision VisionTransformer
        return 1
    return 0 if hasattr(net, "pretrained_cfg") else None  # timm declares num_prefix_tokens where there are any


def _patches(net: nn.Module) -> int | None:
    embed = getattr(net, "patch_embed", None)
    n = getattr(embed, "num_patches", None)
    return n if getattr(embed, "strict_img_size", False) and isinstance(n, int) else None


def resolve_layout(f: torch.Tensor, channels: int, layout: str | None, declared_layout: str | None,
                   where: str) -> str:
    """The layout of the features ``f`` captured at ``where``, for a head of ``channels`` inputs."""
    shape = tuple(f.shape)
    if layout is not None:
        if f.dim() != (3 if layout == "tokens" else 4):
            raise ValueError(f"layout={layout!r} does not fit the {f.dim()}-D output {shape} of {where!r}")
    elif f.dim() == 3:
        layout = "tokens"
    elif f.dim() != 4:
        raise ValueError(f"the output of {where!r} has shape {shape}; the early head pools (B, C, H, W), "
                         f"(B, H, W, C) or (B, N, C) tokens")
    elif declared_layout in ("nchw", "nhwc"):
        layout = declared_layout
    elif shape[1] == channels and shape[3] == channels:
        raise ValueError(f"the output {shape} of {where!r} could be (B, C, H, W) or (B, H, W, C) with "
                         f"{channels} channels and the model declares neither: pass layout='nchw' or 'nhwc'")
    elif shape[1] == channels or shape[3] == channels:
        layout = "nchw" if shape[1] == channels else "nhwc"
    else:
        raise ValueError(f"the output {shape} of {where!r} has no dimension of in_channels={channels} in "
                         f"dim 1 (NCHW) or dim 3 (NHWC): pass in_channels and/or layout")
    got = shape[1] if layout == "nchw" else shape[-1]
    if got != channels:
        raise ValueError(f"the output {shape} of {where!r} has {got} channels as {layout!r}, but the head "
                         f"was built for in_channels={channels}: pass in_channels and/or layout")
    return layout


def resolve_prefix(f: torch.Tensor, explicit: int | None, decl: Declared, where: str) -> int:
    """How many leading tokens of ``f`` ``(B, N, C)`` are not image patches."""
    n = f.shape[1]
    if explicit is not None:
        prefix = explicit
    elif decl.prefix_tokens is None:
        raise ValueError(f"{where!r} outputs {n} tokens and the model does not declare how many of them are "
                         f"class / register tokens (timm num_prefix_tokens): pass prefix_tokens")
    elif decl.num_patches is None or n == decl.prefix_tokens + decl.num_patches:
        prefix = decl.prefix_tokens
    elif n == decl.num_patches:  # a hook point before the prefix tokens are added (e.g. CaiT's blocks)
        prefix = 0
    else:
        raise ValueError(f"{where!r} outputs {n} tokens, not the declared {decl.num_patches} patches plus "
                         f"{decl.prefix_tokens} prefix tokens: pass prefix_tokens")
    if not 0 <= prefix < n:
        raise ValueError(f"prefix_tokens={prefix} leaves no image token of the {n} tokens of {where!r}")
    return prefix


def pool(f: torch.Tensor, layout: str, prefix_tokens: int = 0) -> torch.Tensor:
    """Global average pool ``(B, C)`` over the image positions (patch tokens only, for tokens)."""
    if layout == "nchw":
        return f.mean((2, 3))  # a mean, not adaptive pooling: deterministic backward on CUDA
    if layout == "nhwc":
        return f.mean((1, 2))
    return f[:, prefix_tokens:].mean(1)


def check_layout(layout: str | None, prefix_tokens) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or None (declared by the model / read from the "
                         f"shape), got {layout!r}")
    if prefix_tokens is not None and (isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int)
                                      or prefix_tokens < 0):
        raise ValueError(f"prefix_tokens must be an int >= 0 or None, got {prefix_tokens!r}")
