"""What the training entry points share: config loading with a readable error, and the fit-and-report tail."""

from __future__ import annotations

import json
import sys

from classification.config import ConfigError, load_config


def load_or_report(schema, path, overrides, errors: tuple[type[Exception], ...] = (ConfigError,)):
    """The config, or ``None`` after printing ``config error: ...`` (the caller exits 2)."""
    try:
        return load_config(schema, path, overrides)
    except errors as err:
        print(f"config error: {err}", file=sys.stderr)
        return None


def fit_and_report(trainer, resume: bool, counter: str = "epoch") -> int:
    """Train (or continue) and print the final metrics as one JSON line on rank 0."""
    metrics = trainer.fit(resume=resume)
    if trainer.info.is_main:
        print(json.dumps({counter: getattr(trainer, counter), **metrics}))
    return 0
