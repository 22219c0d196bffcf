"""Model entry points by name: ``create_model("wrn_28_10", num_classes=10)``.

CIFAR networks are our own modules (see each file for its source); ``resnet50`` / ``resnet101`` are
torchvision's (so exported weights keep torchvision's names for detection and re-ID); any other name
``timm:<name>`` is created by timm. Every model has a first block usable as the early-head hook point,
given by :func:`early_hook_point`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torchvision
from torch import nn

from .cifar_resnet import cifar_resnet18
from .cifar_resnet110 import cifar_resnet110
from .shake import pyramidnet272_shakedrop, shake_shake_26_2x96d
from .wide_resnet import wrn_28_2, wrn_28_10

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "cifar_resnet18": cifar_resnet18,
    "cifar_resnet110": cifar_resnet110,
    "wrn_28_10": wrn_28_10,
    "wrn_28_2": wrn_28_2,
    "shake_shake_26_2x96d": shake_shake_26_2x96d,
    "pyramidnet272_shakedrop": pyramidnet272_shakedrop,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}


def model_arguments(name: str) -> list[str] | None:
    """The keyword arguments (``model.kwargs``) the entry point ``name`` accepts besides ``num_classes``,
    from its signature; None for ``timm:<name>`` (timm hands them to the model class: checked when building)."""
    if name.startswith("timm:"):
        return None
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(_MODELS)} or 'timm:<name>'")
    params = inspect.signature(_MODELS[name]).parameters
    names = [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    if any(v.kind is v.VAR_KEYWORD for v in params.values()):  # torchvision's resnet50(*, weights, progress,
        names += [p for p in inspect.signature(torchvision.models.ResNet).parameters  # **kwargs) -> ResNet(...)
                  if p not in ("block", "layers")]
    return sorted(set(names) - {"num_classes"})


def check_model_kwargs(name: str, kwargs: dict) -> None:
    """``model.kwargs`` must be arguments of the model's entry point: a misspelt one is an error naming it
    and what the model accepts (instead of a TypeError when the model is built)."""
    accepted = model_arguments(name)
    if accepted is None:
        return
    if "num_classes" in kwargs:
        raise ValueError("model.kwargs: set model.num_classes instead of model.kwargs.num_classes")
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"model.kwargs: {name} takes no argument {', '.join(unknown)}; it accepts "
                         f"{', '.join(accepted) or 'none'} (kwargs inherited through _BASE_ are merged: "
                         "'model.kwargs={}' clears them)")


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered model, or a timm model as ``timm:<name>``."""
    check_model_kwargs(name, kwargs)
    if name.startswith("timm:"):
        import timm

        try:
            return timm.create_model(name[5:], num_classes=num_classes, **kwargs)
        except TypeError as err:
            if "unexpected keyword argument" not in str(err):
                raise
            raise ValueError(f"model.kwargs {kwargs} do not fit {name}: {err}") from None
    return _MODELS[name](num_classes=num_classes, **kwargs)


def early_hook_point(model: nn.Module) -> str:
    """Name of the first block (the paper's early-head position): ``layer1`` for our networks and
    torchvision/timm ResNets, else timm's first ``stages.0`` / ``blocks.0`` / ``layers.0``."""
    names = {n for n, _ in model.named_modules()}
    for candidate in ("layer1", "stages.0", "blocks.0", "layers.0", "features.1"):
        if candidate in names:
            return candidate
    raise ValueError(f"no first block found in {type(model).__name__}; set the early head position explicitly")


def list_models() -> list[str]:
    return sorted(_MODELS)
