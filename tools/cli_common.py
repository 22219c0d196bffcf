"""What the training entry points share: config loading with a readable error, the run flags, and the
fit-and-report tail that turns interrupts and runtime mistakes into one line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.engine.checkpoint import eval_config
from core.engine.config import ConfigError, load_config
from core.engine.workers import worker_message

DEBUG_ENV = "KEEPAUG_DEBUG"  # =1: full tracebacks instead of one-line errors
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def one_line(err: BaseException) -> str:
    """``str(err)``, reduced to the worker's own message when a DataLoader worker raised it."""
    return worker_message(str(err)) or str(err)


def close_progress(trainer) -> None:
    """Close the running epoch's progress bar (``leave=False``: it clears its line) so that a message
    printed next starts on a clean line and no blank bar is redrawn after it at exit."""
    bar = getattr(trainer, "bar", None)
    if bar is not None:
        bar.close()


def debugging(args=None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def add_run_flags(ap) -> None:
    """``--resume``, ``--overwrite`` and ``--debug``, the same in every trainer's command line."""
    ap.add_argument("--resume", action="store_true",
                    help="continue from <output_dir>/last.pt (starts a new run there if it has none)")
    ap.add_argument("--overwrite", action="store_true", help="replace the run in <output_dir> instead of refusing")
    ap.add_argument("--debug", action="store_true", help=f"full tracebacks (or set {DEBUG_ENV}=1)")


def load_or_report(schema, path, overrides, errors: tuple[type[Exception], ...] = (ConfigError,), args=None):
    """The config, or ``None`` after printing ``config error: ...`` (the caller exits 2)."""
    try:
        return load_config(schema, path, overrides)
    except errors as err:
        if debugging(args):
            raise
        print(f"config error: {err}", file=sys.stderr)
        return None


def one_line_errors(run, args=None) -> int:
    """``run()``'s exit code; a mistake the user can fix (config, file, data, run directory) is one
    ``error:`` line and exit 2 instead of a traceback, unless debugging."""
    try:
        return run()
    except (ConfigError, FloatingPointError, OSError, ValueError, KeyError) as err:
        if debugging(args):
            raise
        if isinstance(err, ConfigError):
            message, code = f"config error: {err}", EXIT_USAGE
        elif isinstance(err, FloatingPointError):
            message, code = f"error: {err}", 1
        else:
            message, code = f"error: {one_line(err)} (--debug or {DEBUG_ENV}=1 shows the traceback)", EXIT_USAGE
        print(message, file=sys.stderr)
        return code


def run_config(ap, args, schema, run) -> int:
    """``run(cfg, args)`` with one-line errors. ``cfg``: the ``config`` file with the ``overrides``, or with
    ``--eval-only`` the ``--checkpoint``'s config (its model; without a config file, all its settings),
    overrides winning. A first ``key=value`` taken for the config file is an override."""
    if args.eval_only and not args.checkpoint:
        ap.error("--eval-only needs --checkpoint")
    if args.config and "=" in args.config and not Path(args.config).is_file():
        args.overrides, args.config = [args.config, *args.overrides], None
    if args.eval_only:
        return one_line_errors(lambda: run(eval_config(schema, args.checkpoint, args.config, args.overrides), args),
                               args)
    if not args.config:
        ap.error("a config file is required")
    cfg = load_or_report(schema, args.config, args.overrides, args=args)
    return EXIT_USAGE if cfg is None else one_line_errors(lambda: run(cfg, args), args)


def fit_and_report(trainer, args, counter: str = "epoch") -> int:
    """Train (or continue) and print the final metrics as one JSON line on rank 0; Ctrl-C stops at once with
    one line saying where the run can continue from (exit 130)."""
    try:
        metrics = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        bar = getattr(trainer, "bar", None)
        lead = "" if bar is not None and not bar.disable else "\n"  # closing wipes the bar's line and the ^C
        close_progress(trainer)
        last = trainer.out / "last.pt"
        saved = f"{last} (epoch {getattr(trainer, 'saved_epoch', '?')})" if last.is_file() else "none yet"
        epoch = getattr(trainer, "running_epoch", trainer.epoch + 1)
        print(f"{lead}interrupted at epoch {epoch} step {trainer.step}; last checkpoint "
              f"{saved}; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException:
        close_progress(trainer)  # the error line that follows starts on a clean line
        raise
    if trainer.info.is_main:
        print(json.dumps({counter: getattr(trainer, counter), **metrics}))
    return 0
