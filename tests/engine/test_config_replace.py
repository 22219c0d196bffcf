"""core.engine.config: mappings merge key by key, an empty mapping replaces, overrides apply in order."""

import dataclasses

import pytest

from core.engine.config import ConfigError, apply_overrides, load_config, merge


@dataclasses.dataclass
class Model:
    name: str = "a"
    kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Cfg:
    model: Model = dataclasses.field(default_factory=Model)
    seed: int = 0


def test_merge_merges_mappings_and_an_empty_one_replaces():
    base = {"model": {"name": "a", "kwargs": {"width": 16, "depth": 2}}}
    assert merge(base, {"model": {"kwargs": {"dropout": 0.3}}})["model"]["kwargs"] == {"width": 16, "depth": 2,
                                                                                       "dropout": 0.3}
    assert merge(base, {"model": {"kwargs": {}}}) == {"model": {"name": "a", "kwargs": {}}}
    assert base["model"]["kwargs"] == {"width": 16, "depth": 2}  # inputs untouched


def test_overrides_apply_in_order_so_a_mapping_can_be_cleared_then_set():
    data = {"model": {"kwargs": {"width": 16}}}
    assert apply_overrides(data, ["model.kwargs={}", "model.kwargs.dropout=0.3"]) == {"model": {"kwargs": {
        "dropout": 0.3}}}
    assert apply_overrides(data, ["model.kwargs.dropout=0.3", "model.kwargs={}"]) == {"model": {"kwargs": {}}}
    assert apply_overrides(data, ["model.kwargs={depth: 3}"]) == {"model": {"kwargs": {"width": 16, "depth": 3}}}


def test_an_empty_mapping_in_a_file_clears_its_bases(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  name: b\n  kwargs: {width: 16}\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nmodel:\n  kwargs: {}\n")
    (tmp_path / "merging.yaml").write_text("_BASE_: base.yaml\nmodel:\n  kwargs: {dropout: 0.1}\n")
    assert load_config(Cfg, tmp_path / "child.yaml").model == Model("b", {})
    assert load_config(Cfg, tmp_path / "merging.yaml").model.kwargs == {"width": 16, "dropout": 0.1}
    assert load_config(Cfg, tmp_path / "base.yaml", ["model.kwargs={}"]).model.kwargs == {}
    with pytest.raises(ConfigError, match="command-line override 'seed=x'"):  # blame still finds the culprit
        load_config(Cfg, tmp_path / "base.yaml", ["model.kwargs={}", "seed=x"])
