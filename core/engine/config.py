"""The typed config system shared by every trainer (`classification`, UDA, `reid`) and `detection`'s checks.

A config is a tree of dataclasses. YAML files fill it: a file may name a ``_BASE_`` file (a path
relative to itself) whose values it overrides; command-line overrides are ``section.key=value`` with
the value parsed as YAML. Unknown keys and values of the wrong type are errors that name the key and
the file. The resolved config is written to the run directory (:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, key or value is wrong."""


def read_yaml_mapping(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """One config file as a dict (``_BASE_`` untouched); ``seen``: the files that include it, for cycles."""
    if path in seen:
        raise ConfigError(f"_BASE_ cycle through {path}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    data = read_yaml_mapping(path, seen)
    base = data.pop("_BASE_", None)
    return data if base is None else merge(_read_yaml(path.parent / base, (*seen, path)), data)


def merge(base: dict, new: dict) -> dict:
    """``new`` over ``base``, mappings merged key by key; an empty mapping in ``new`` replaces (clears) the
    mapping under it instead (``model.kwargs={}`` drops the kwargs a ``_BASE_`` file set)."""
    out = dict(base)
    for k, v in new.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and v and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``data`` with the ``section.key=value`` overrides (values parsed as YAML) merged on in order
    (:func:`merge`), so that ``'model.kwargs={}' model.kwargs.dropout=0.3`` first clears the mapping, then
    sets one key."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        for section in reversed(key.strip().split(".")):
            value = {section: value}
        data = merge(data, value)
    return data


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _check_type(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    # a str too: PyYAML reads 1e-4 (no dot) as a string
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an int, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}{k}' for k in unknown)}; "
                          f"{where.rstrip('.') or 'top level'} accepts: {', '.join(sorted(names))}")
    cfg = cls(**{k: from_dict(hints[k], v, f"{where}{k}.") if dataclasses.is_dataclass(hints[k])
                 else _check_type(v, hints[k], f"{where}{k}") for k, v in data.items()})
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as err:  # a validate() check names its key: report it as a config error
            raise ConfigError(str(err)) from None
    return cfg


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file (with its ``_BASE_`` chain), then ``key=value`` overrides."""
    data = _read_yaml(Path(path)) if path else {}
    overrides = list(overrides or [])
    try:
        return from_dict(cls, apply_overrides(data, overrides))
    except ConfigError as err:
        culprit = _blame_override(cls, data, overrides)
        where = f"command-line override {culprit!r}" if culprit else (path or "<overrides>")
        raise ConfigError(f"{where}: {err}") from None


def _blame_override(cls: type, data: dict, overrides: list[str]) -> str | None:
    """The first override that makes a valid file invalid (None when the file alone is at fault)."""
    try:
        from_dict(cls, data)
    except ConfigError:
        return None
    for i in range(len(overrides)):
        try:
            from_dict(cls, apply_overrides(data, overrides[: i + 1]))
        except ConfigError:
            return overrides[i]
    return None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with :func:`load_config`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

