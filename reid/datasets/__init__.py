"""Re-ID datasets, registered by name: ``build_dataset("market1501", root)``.

A dataset file defines a class with ``train``, ``query`` and ``gallery`` lists of
``(path, pid, camid)`` and registers it with :func:`register`. Adding DukeMTMC-reID or MSMT17 is one
file that parses its own names.
"""

from __future__ import annotations

from collections.abc import Callable

DATASETS: dict[str, Callable] = {}


def register(name: str):
    def deco(cls):
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = cls
        return cls
    return deco


def build_dataset(name: str, root: str, **kwargs):
    if name not in DATASETS:
        raise ValueError(f"unknown re-ID dataset {name!r}; registered: {sorted(DATASETS)}")
    return DATASETS[name](root, **kwargs)


from . import market1501  # noqa: E402,F401  (registers itself)
