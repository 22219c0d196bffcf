"""The run directory's rules, shared by every trainer (classification, UDA, re-ID):

- a new run never overwrites one by accident: a folder that holds ``last.pt`` is refused unless the run
  resumes (``--resume``) or replaces it (``--overwrite``);
- ``--resume`` can be called blindly (a cluster requeue script): without a checkpoint it starts fresh and
  says so; with one, the stored config must equal the resolved one except for keys that may change
  between the two processes (:data:`MAY_CHANGE`);
- what a run leaves behind besides checkpoints, ``metrics.csv`` and ``train.log`` (:mod:`core.engine.logs`):
  ``env.json`` (versions, device, git commit, command line; one entry per start).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

# keys that may differ between any run and its resumption: schedule length, machine and logging; a schema
# adds its own with a ``RESUME_MAY_CHANGE`` tuple (e.g. classification's train.eval_every, re-ID's eval.)
MAY_CHANGE = ("train.epochs", "train.stop_after_epoch", "train.device", "train.progress", "train.tensorboard",
              "train.check_every", "train.output_dir", "train.keep_every", "train.cuda_graph", "data.workers",
              "data.root", "data.download")
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "config.yaml", "train.log", "env.json", "eval.json", "tb")


class RunDirError(ValueError):
    """The run directory does not fit the request (a run is there, or a different one)."""


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v and k != "kwargs":  # model.kwargs is one value
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def may_change(schema) -> tuple[str, ...]:
    """The key prefixes of ``schema`` (a config class or instance) that may change on resume."""
    return MAY_CHANGE + tuple(getattr(schema, "RESUME_MAY_CHANGE", ()))


def config_changes(stored: dict, current: dict, allowed_keys: tuple[str, ...] = MAY_CHANGE
                   ) -> tuple[list[str], list[str]]:
    """``(allowed, refused)``: ``key: stored -> current`` lines for every key whose value differs."""
    a, b = flatten(stored), flatten(current)
    allowed, refused = [], []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            line = f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}"
            (allowed if key.startswith(allowed_keys) else refused).append(line)
    return allowed, refused


def check_resume_config(stored: dict, current: dict, checkpoint: Path, only: tuple[str, ...] = (),
                        allowed_keys: tuple[str, ...] = MAY_CHANGE) -> list[str]:
    """Raise :class:`RunDirError` naming every key (and both values) that may not change on resume (with
    ``only``: among the keys with those prefixes, e.g. ``("model.",)`` to evaluate a checkpoint); return the
    allowed changes for the log."""
    allowed, refused = config_changes(stored, current, allowed_keys)
    if only:
        refused = [line for line in refused if line.startswith(only)]
    if refused:
        what = "the checkpoint's model differs" if only else "these keys may not change on resume"
        raise RunDirError(f"{checkpoint} was written with another config; {what}: {'; '.join(refused)}"
                          f"{'' if only else ' (use another train.output_dir for a new run)'}")
    return allowed


def prepare(out: Path, resume: bool, overwrite: bool, is_main: bool) -> bool:
    """Apply the folder rules; returns whether to resume (False when ``--resume`` finds no checkpoint)."""
    ckpt = out / "last.pt"
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if resume and not ckpt.is_file():
        if is_main:
            print(f"--resume: no checkpoint in {out}; starting a new run there", flush=True)
        resume = False
    if not resume and ckpt.is_file():
        if not overwrite:
            raise RunDirError(f"train.output_dir {out} already holds a run (last.pt): continue it with --resume, "
                              "choose another train.output_dir, or replace it with --overwrite")
        if is_main:
            clear(out)
            print(f"--overwrite: removed the previous run's files from {out}", flush=True)
    elif not resume and is_main and any((out / name).exists() for name in RUN_FILES):
        clear(out)  # a start that died before its first checkpoint: nothing to continue
        print(f"removed the files of a run in {out} that never reached a checkpoint", flush=True)
    return resume


def clear(out: Path) -> None:
    """Remove a run's files (not anything else the folder holds)."""
    for path in [*(out / name for name in RUN_FILES), *out.glob("epoch_*.pt")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record_env(out: Path, device: torch.device, world_size: int, resumed: bool) -> None:
    """Append this start's environment to ``env.json`` (a list: one entry per start of the run)."""
    import numpy
    import torchvision

    path = out / "env.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed": resumed, "command": sys.argv,
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": numpy.__version__, "cuda": torch.version.cuda, "host": platform.node(), "world_size": world_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "git_commit": git_commit(),
    })
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2))
