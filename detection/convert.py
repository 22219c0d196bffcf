"""torchvision-layout ResNet weights -> a Detectron2 ``.pkl`` backbone, with every dropped key reported.

Accepted inputs (files): a backbone exported by ``classification`` (``tools/train_cls.py --export``),
a full ``classification`` training checkpoint (its ``model``; the early head is stored apart and the
classifier ``fc.*`` is dropped), a plain torchvision or timm ResNet state dict (``.pth``/``.pt``/
``.safetensors``), or a wrapped one (``{'state_dict': ...}`` as CutMix-PyTorch and timm's train.py
save it, ``module.``/``_orig_mod.`` prefixes from DDP/DataParallel/torch.compile).

The renaming is that of Detectron2's ``tools/convert-torchvision-to-d2.py`` (stem ``conv1``/``bn1`` ->
``stem.conv1``/``stem.conv1.norm``, ``layer1-4`` -> ``res2-5``, ``bnN`` -> ``convN.norm``,
``downsample.0/1`` -> ``shortcut``/``shortcut.norm``), but only ResNet keys are renamed: the
classifier and anything else is left out and reported instead of becoming ``stem.fc.*``.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path

import torch

from core.engine.checkpoint import load_error_reason, torch_file_problem

# blocks per stage -> depth, for Bottleneck and BasicBlock ResNets (Detectron2 builds all five)
BOTTLENECK_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
BASIC_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}
LAYOUT_KEYS = ("depth", "num_groups", "width_per_group")  # of resnet_layout, as MODEL.RESNETS.<KEY.upper()>
WRAPPER_PREFIX = re.compile(r"^(module\.)?(_orig_mod\.)?")  # DDP/DataParallel, then torch.compile
RESNET_KEY = re.compile(r"^(conv1|bn1)\.|^layer[1-4]\.\d+\.")
BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
# every key a plain torchvision ResNet has: anything else under conv1/bn1/layerN is a variant (SE, SK, GN, ...)
PLAIN_RESNET_KEY = re.compile(rf"^(conv1\.weight|bn1\.{BN})$|^layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.{BN}|"
                              rf"downsample\.0\.weight|downsample\.1\.{BN})$")


class ConversionError(ValueError):
    """The input is not a convertible ResNet, or not the one asked for."""


def read_weights(path: str | Path, trust_pickle: bool = False, trust_hint: str = "--trust-pickle") -> tuple[dict, str]:
    """Load ``path`` and unwrap it to a state dict; returns it and what kind of file it was.

    ``.pt``/``.pth`` files are loaded with ``weights_only=True``; one that needs full pickle (a pickled
    ``nn.Module``, a checkpoint with arbitrary objects) is refused unless ``trust_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - any decoding failure means a bad file
            raise ConversionError(f"cannot read {path}: {err}") from err
        return unwrap(obj, str(path))[0], "safetensors state dict"
    problem = torch_file_problem(path)
    if problem:
        raise ConversionError(f"cannot read {path}: it is {problem}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        found = re.search(r"Unsupported global: (GLOBAL [\w.]+)", str(err))
        if not isinstance(err, pickle.UnpicklingError) or found is None:  # no refused class: a broken or foreign file
            raise ConversionError(f"cannot read {path}: {load_error_reason(err)}") from err
        if not trust_pickle:
            raise ConversionError(
                f"{path} holds Python objects beyond tensors and plain containers ({found.group(1)}), which "
                f"loading it would execute. If you trust where it came from, pass {trust_hint} to load it "
                "with full pickle") from err
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err2:  # noqa: BLE001
            raise ConversionError(f"cannot read {path}: {load_error_reason(err2)}") from err2
    return unwrap(obj, str(path))


def unwrap(obj, where: str = "input") -> tuple[dict, str]:
    if isinstance(obj, torch.nn.Module):
        state, kind = obj.state_dict(), f"{type(obj).__name__} module"
    elif isinstance(obj, dict) and "model" in obj and "model_name" in obj:
        state, kind = obj["model"], f"classification training checkpoint ({obj['model_name']})"
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state, kind = obj["state_dict"], "wrapped state dict ('state_dict')"
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state, kind = obj["model"], "wrapped state dict ('model')"
    elif isinstance(obj, dict):
        state, kind = obj, "state dict"
    else:
        raise ConversionError(f"{where}: expected a state dict or checkpoint, got {type(obj).__name__}")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{where}: not a state dict (values that are not tensors)")
    out = {WRAPPER_PREFIX.sub("", key): value for key, value in state.items()}
    if "conv1.weight" not in out and any(k.startswith("backbone.conv1.") for k in out):
        out = {k.removeprefix("backbone."): v for k, v in out.items()}
    return out, kind


def resnet_layout(state: dict) -> dict:
    """Depth, block type, width and groups of a torchvision-layout ResNet state dict."""
    if "conv1.weight" not in state or not any(k.startswith("layer4.") for k in state):
        sample = ", ".join(sorted(state)[:4])
        words = other_layout(state)
        raise ConversionError(f"not a torchvision-layout ResNet (no conv1/layer1-4 weights; "
                              f"{f'{words}: ' if words else ''}keys like {sample})")
    variant = [k for k in state if RESNET_KEY.match(k) and not PLAIN_RESNET_KEY.match(k)]
    if variant:
        raise ConversionError(f"not a plain ResNet: {variant[:3]} have no place in Detectron2's ResNet (SE, SK, "
                              "GroupNorm, ... variants: use the timm backbone, MODEL.BACKBONE.NAME build_timm_*)")
    no_stats = [k for k in state if re.search(r"(^|\.)bn\d\.weight$|downsample\.1\.weight$", k)
                and k.replace("weight", "running_var") not in state]
    if no_stats:
        raise ConversionError(f"normalisation layers without BatchNorm running statistics (e.g. {no_stats[0]}): "
                              "Detectron2's FrozenBN needs them")
    stem = tuple(state["conv1.weight"].shape)
    if stem[1:] != (3, 7, 7):
        raise ConversionError(f"the stem conv1 is {stem}, not Detectron2's 7x7 ResNet stem (a CIFAR or deep-stem "
                              "ResNet cannot be converted; use the timm backbone, MODEL.BACKBONE.NAME build_timm_*)")
    blocks = tuple(1 + max((int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")), default=-1)
                   for i in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in state
    depth = (BOTTLENECK_DEPTHS if bottleneck else BASIC_DEPTHS).get(blocks)
    if depth is None:
        raise ConversionError(f"blocks per stage {blocks} match no ResNet depth Detectron2 builds (18/34/50/101/152)")
    groups, width = groups_and_width(state["layer1.0.conv2.weight"].shape)
    return {"depth": depth, "block": "bottleneck" if bottleneck else "basic", "num_groups": groups,
            "width_per_group": width, "stem_out_channels": stem[0]}


def groups_and_width(conv2_shape) -> tuple[int, int]:
    """Groups and width per group of a first-stage 3x3 conv of shape ``(out, in / groups, 3, 3)``."""
    groups = conv2_shape[0] // conv2_shape[1]
    return groups, conv2_shape[0] // groups


def rename(key: str) -> str:
    """torchvision -> Detectron2 name of one ResNet key (rules of convert-torchvision-to-d2.py)."""
    if not key.startswith("layer"):
        key = "stem." + key
    key = re.sub(r"layer([1-4])", lambda m: f"res{int(m[1]) + 1}", key)
    key = re.sub(r"bn([1-3])", r"conv\1.norm", key)
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def layout_name(layout: dict) -> str:
    """ResNet-50, ResNeXt-101 32x8d, Wide ResNet-50 (width 128), ... from :func:`resnet_layout`."""
    depth, groups, width = layout["depth"], layout["num_groups"], layout["width_per_group"]
    if groups > 1:
        return f"ResNeXt-{depth} {groups}x{width}d"
    return f"ResNet-{depth}" if width == 64 else f"Wide ResNet-{depth} (width {width})"


def check_layout(layout: dict, depth: int | None, num_groups: int, width_per_group: int) -> None:
    """The weights must be the ResNet the Detectron2 config builds: depth, groups and width per group."""
    asked = dict(zip(LAYOUT_KEYS, (depth, num_groups, width_per_group)))
    wrong = [k for k, v in asked.items() if v is not None and layout[k] != v]
    if not wrong:
        return
    got = ", ".join(f"{k} {layout[k]}" for k in LAYOUT_KEYS)
    want = ", ".join(f"{k} {asked[k]}" for k in wrong)
    fix = " ".join(f"MODEL.RESNETS.{k.upper()}={layout[k]}" for k in LAYOUT_KEYS)
    what = "depth mismatch" if "depth" in wrong else "groups / width mismatch"
    raise ConversionError(f"{what}: the weights are a {layout_name(layout)} ({got}) but {want} was asked for: "
                          f"convert with {convert_flags(layout)} and train with {fix}")


def convert_flags(layout: dict, keys: tuple[str, ...] = LAYOUT_KEYS) -> str:
    """``--depth 50 --num-groups 1 --width-per-group 64``: ``tools/convert_det.py``'s flags for ``keys``."""
    return " ".join(f"--{k.replace('_', '-')} {layout[k]}" for k in keys)


def torchvision_to_detectron2(state: dict, depth: int | None = None, num_groups: int | None = 1,
                              width_per_group: int | None = 64) -> tuple[dict, dict]:
    """Returns the Detectron2 ``model`` dict (numpy arrays) and a report: layout, unconverted keys.

    ``depth``, ``num_groups`` and ``width_per_group`` are what the Detectron2 config will build
    (``MODEL.RESNETS.*``; Detectron2's defaults are groups 1, width 64): weights of another layout
    (a ResNeXt, a wide ResNet) are an error naming the values to use. ``None`` accepts any.
    """
    layout = resnet_layout(state)
    check_layout(layout, depth, num_groups, width_per_group)
    resnet = {key: value for key, value in state.items() if RESNET_KEY.match(key)}
    model = {rename(key): value.detach().cpu().float().numpy() for key, value in resnet.items()
             if not key.endswith("num_batches_tracked")}  # BatchNorm's step counter: FrozenBN has none
    return model, {**layout, "converted": len(model), "unconverted": [k for k in state if k not in resnet],
                   "ignored_num_batches_tracked": len(resnet) - len(model)}


# non-ResNet layouts recognised by their keys, for messages about a file that is not a ResNet
OTHER_LAYOUTS = (
    (re.compile(r"^features\.\d+\."), "a torchvision MobileNet / EfficientNet / VGG-style state dict (features.N)"),
    (re.compile(r"^conv_stem\.|^blocks\.\d+\."), "a timm EfficientNet / MobileNet state dict (conv_stem, blocks)"),
    (re.compile(r"^patch_embed\."), "a vision-transformer state dict (patch_embed)"),
    (re.compile(r"^stem\.\d+\.|^stages\.\d+\."), "a timm ConvNeXt / ResNetV2-style state dict (stem, stages)"),
)


def other_layout(state: dict) -> str | None:
    """The non-ResNet layout of :data:`OTHER_LAYOUTS` that ``state``'s keys show, in words, or None."""
    return next((words for pattern, words in OTHER_LAYOUTS if any(pattern.match(str(k)) for k in state)), None)


def describe_weights(obj) -> tuple[str, dict | None]:
    """What a loaded weights file looks like, in words, and its ResNet layout (:func:`resnet_layout`) when
    it is a convertible torchvision-layout ResNet (None otherwise). Never raises."""
    try:
        state, kind = unwrap(obj)
    except ConversionError:
        state, kind = (obj.get("model", obj) if isinstance(obj, dict) else {}), "a dict of non-tensor values"
    if not isinstance(state, dict):
        return f"a {type(state).__name__}", None
    if "conv1.weight" in state and any(k.startswith("layer4.") for k in state):
        try:
            layout = resnet_layout(state)
        except ConversionError as err:
            return f"a torchvision-layout ResNet that Detectron2's ResNet cannot take ({err})", None
        if kind.startswith("classification"):
            return f"a {kind}, a torchvision-layout {layout_name(layout)}", layout
        return (f"a torchvision-layout {layout_name(layout)} state dict (a torchvision or timm ResNet, or "
                "tools/train_cls.py --export)"), layout
    words = other_layout(state)
    if words:
        return f"{words}, not a ResNet", None
    return f"{kind} with keys like {', '.join(sorted(map(str, state))[:3]) or '(none)'}", None


def convert_command(src: str, layout: dict) -> str:
    """The ``tools/convert_det.py`` command line that converts ``src`` (of ``layout``) next to itself."""
    plain = (layout["num_groups"], layout["width_per_group"]) == (1, 64)  # the flags' defaults
    flags = convert_flags(layout, ("depth",) if plain else LAYOUT_KEYS)
    return f".venv/bin/python tools/convert_det.py {src} {Path(src).with_suffix('.pkl')} {flags}"


def save_detectron2_pkl(model: dict, path: str | Path, provenance: dict) -> None:
    """Write the pickle Detectron2's DetectionCheckpointer reads (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"model": model, "__author__": "torchvision", "matching_heuristics": True, "keepaugment": provenance}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(data, f)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # left only when writing failed


def load_input(spec: str, trust_pickle: bool = False) -> tuple[dict, str]:
    """A file path, or ``timm:<name>`` for timm's pretrained weights of that model (downloads)."""
    if spec.startswith("timm:"):
        import timm

        try:
            model = timm.create_model(spec[5:], pretrained=True)
        except Exception as err:  # noqa: BLE001 - offline, unknown name, ...
            raise ConversionError(f"{spec}: cannot create the pretrained timm model ({err})") from err
        return unwrap(model, spec)
    return read_weights(spec, trust_pickle)


def convert(src: str, out: str | Path, depth: int | None = None, num_groups: int | None = 1,
            width_per_group: int | None = 64, trust_pickle: bool = False) -> dict:
    """Convert ``src`` (see :func:`load_input`) to ``out``; returns the report."""
    state, kind = load_input(src, trust_pickle)
    try:
        model, report = torchvision_to_detectron2(state, depth, num_groups, width_per_group)
    except ConversionError as err:
        raise ConversionError(f"{src}: {err}") from None
    report = {"source": str(src), "kind": kind, **report}
    save_detectron2_pkl(model, out, report)
    return report
