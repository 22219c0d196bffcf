"""What a model returns and what input size it accepts, as far as the saliency pass needs to know.

- :func:`select_logits`: the ``(B, K)`` logits of a model returning a tuple, a dict (Hugging Face
  ``ModelOutput``) or another structure, chosen by ``output=`` (a key, an index or a callable).
- :func:`fixed_input_size`: the only input size a model accepts when it declares one (timm ViT / DeiT /
  Swin built at a fixed ``img_size``; torchvision ``VisionTransformer``), so that low-resolution saliency on
  such a model is an error naming ``low_res`` instead of the model's own size assertion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

Output = str | int | Callable[[Any], torch.Tensor] | None


def _describe(out) -> str:
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {list(out)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"


def select_logits(out, output: Output = None) -> torch.Tensor:
    """The logits tensor in the model's output ``out``: ``out`` itself, or ``output(out)`` for a callable,
    or ``out[output]`` for a key / index."""
    if output is not None:
        try:
            out = output(out) if callable(output) else out[output]
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"output={output!r} does not select the logits from the model's output "
                             f"({_describe(out)}): {err}") from err
    if not isinstance(out, torch.Tensor):
        hint = "0"
        if isinstance(out, Mapping):
            hint = "'logits'" if "logits" in out else repr(next(iter(out), "key"))
        raise ValueError(f"the model returned {_describe(out)}, not a (B, K) logits tensor: pass output= (a key, "
                         f"an index or a callable) to select the logits, e.g. output={hint}")
    return out


def fixed_input_size(net: nn.Module) -> tuple[int, int] | None:
    """``(H, W)`` the model requires, if it declares one; None when it accepts other sizes (or is silent)."""
    traits = getattr(net, "_traits", None)  # timm >= 1.0.2x
    if isinstance(traits, dict) and "fixed_input_size" in traits:
        size = traits.get("img_size")
        return tuple(size) if traits["fixed_input_size"] and size is not None else None
    embed = getattr(net, "patch_embed", None)  # older timm: PatchEmbed(strict_img_size=True)
    if getattr(embed, "strict_img_size", False) and getattr(embed, "img_size", None) is not None:
        return tuple(embed.img_size)
    size = getattr(net, "image_size", None)  # torchvision VisionTransformer asserts h == w == image_size
    if isinstance(size, int) and hasattr(net, "conv_proj"):
        return (size, size)
    return None


def low_res_error(net: nn.Module, size: tuple[int, int], full: tuple[int, int], factor: float,
                  fixed: tuple[int, int] | None) -> str:
    """The message for a low-resolution pass on a model that only takes another size."""
    accepts = f"only accepts {fixed[0]}x{fixed[1]} inputs (it declares a fixed input size)" if fixed else (
        "failed on it (a model with a fixed input size?)")
    return (f"low_res: the saliency pass runs on a {size[0]}x{size[1]} copy of the {full[0]}x{full[1]} batch "
            f"(low_res_factor={factor}), but {type(net).__name__} {accepts}. Use low_res=False, or build the "
            f"model with dynamic_img_size=True (timm ViT / DeiT / Swin) so it accepts any size")
