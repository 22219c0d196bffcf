"""Atomic checkpoints with everything an exact resume needs."""

from __future__ import annotations

import os
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, apply_overrides, from_dict, load_config, to_dict


def atomic_save(obj, path: str | Path) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rng_state(generator: torch.Generator) -> dict:
    """Every RNG's state as tensors and plain Python values, so a checkpoint loads with
    ``torch.load(weights_only=True)`` (numpy's state array is stored as a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
             "keep": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys).astype(np.uint32), pos, has_gauss, cached))  # a tensor or an array
    generator.set_state(state["keep"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(generator: torch.Generator, info) -> list[dict]:
    """Every rank's RNG states (a collective under DDP), in rank order, for the checkpoint."""
    mine = rng_state(generator)
    if not info.distributed:
        return [mine]
    states = [None] * info.world_size
    torch.distributed.all_gather_object(states, mine)
    return states


def restore_rng_states(states: list[dict], generator: torch.Generator, info) -> None:
    """This rank's RNG states from a checkpoint written by the same number of processes."""
    if len(states) != info.world_size:
        raise ValueError(f"checkpoint was written by {len(states)} processes, resuming with {info.world_size}: "
                         "an exact resume needs the same number")
    set_rng_state(states[info.rank], generator)


def save_on_main(state: dict, path: str | Path, info) -> None:
    """Rank 0 writes ``state`` atomically; every rank waits for it."""
    if info.is_main:
        atomic_save(state, path)
    if info.distributed:
        torch.distributed.barrier()


def torch_file_problem(path: str | Path) -> str | None:
    """What ``path`` is, from its first bytes, when it cannot be a file ``torch.save`` wrote (a zip archive,
    or a pickle in the legacy format and Detectron2's ``.pkl``); None when it may be one."""
    path = Path(path)
    if path.stat().st_size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):
        return None if zipfile.is_zipfile(path) else "a damaged or truncated zip archive (an interrupted copy?)"
    if head[:1] == b"\x80":  # pickle protocol 2+
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "neither a zip archive nor a pickle, so not written by torch.save"
    return "a text file, not written by torch.save"


def load_error_reason(err: Exception) -> str:
    """One line for why ``torch.load(weights_only=True)`` failed; torch's own message spans lines and advises
    ``weights_only=False``, which is beside the point for a file that is broken or not a checkpoint."""
    text = str(err)
    if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return f"it holds Python objects beyond tensors and plain containers ({found.group(1)})"
    if detail := re.search(r"WeightsUnpickler error: *(\S.*)", text):
        return detail.group(1).strip()
    if isinstance(err, EOFError):
        return "it ends early (truncated?)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    problem = torch_file_problem(path)
    if problem:
        raise ValueError(f"{path} is not a checkpoint: {problem} (a training run writes <output_dir>/last.pt and "
                         "best.pt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # our checkpoints hold no objects
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"cannot read checkpoint {path}: {load_error_reason(err)} (a training checkpoint of this "
                         "project loads with torch.load(weights_only=True))") from err


def config_from_checkpoint(cls, checkpoint: str | Path, overrides: list[str] | None = None):
    """The config stored in a training checkpoint, with ``key=value`` overrides on top (evaluate a run
    without repeating its settings)."""
    ckpt = load_checkpoint(checkpoint)
    stored = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(stored, dict):
        raise ConfigError(f"{checkpoint} holds no config (not a training checkpoint of this project)")
    try:
        return from_dict(cls, apply_overrides(stored, overrides or []))
    except ConfigError as err:
        raise ConfigError(f"{checkpoint} (stored config) with overrides {overrides or []}: {err}") from None


def eval_config(cls, checkpoint: str | Path, config: str | Path | None = None, overrides: list[str] | None = None):
    """The config to evaluate ``checkpoint`` with: its stored config, or the ``config`` file with the
    checkpoint's ``model`` section (the weights fix the architecture), then ``key=value`` overrides."""
    if config is None:
        return config_from_checkpoint(cls, checkpoint, overrides)
    stored = config_from_checkpoint(cls, checkpoint)
    data = to_dict(load_config(cls, config))
    data["model"] = to_dict(stored.model)
    try:
        return from_dict(cls, apply_overrides(data, overrides or []))
    except ConfigError as err:
        raise ConfigError(f"{config} with {checkpoint}'s model settings and overrides {overrides or []}: "
                          f"{err}") from None
