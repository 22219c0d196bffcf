"""Atomic checkpoints with everything an exact resume needs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, from_dict, load_config, merge, parse_overrides, to_dict


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
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else keys
    np.random.set_state((kind, np.asarray(keys).astype(np.uint32), pos, has_gauss, cached))
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


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # our checkpoints hold no objects
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"cannot read checkpoint {path} (a training checkpoint of this project loads with "
                          f"torch.load(weights_only=True)): {err}") from err


def config_from_checkpoint(cls, checkpoint: str | Path, overrides: list[str] | None = None):
    """The config stored in a training checkpoint, with ``key=value`` overrides on top (evaluate a run
    without repeating its settings)."""
    stored = load_checkpoint(checkpoint).get("config")
    if not isinstance(stored, dict):
        raise ConfigError(f"{checkpoint} holds no config (not a training checkpoint of this project)")
    try:
        return from_dict(cls, merge(stored, parse_overrides(overrides or [])))
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
        return from_dict(cls, merge(data, parse_overrides(overrides or [])))
    except ConfigError as err:
        raise ConfigError(f"{config} with {checkpoint}'s model settings and overrides {overrides or []}: "
                          f"{err}") from None
