import pytest

from classification.schema import ClsConfig
from core.engine.config import ConfigError, load_config, save_config


def write(p, text):
    p.write_text(text)
    return p


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  name: wrn_28_10\noptim:\n  lr: 0.1\n  milestones: [1, 2]\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\noptim:\n  lr: 0.2\n")
    cfg = load_config(ClsConfig, child, ["aug.method=keep_cutout", "train.epochs=3", "optim.weight_decay=1e-4"])
    assert cfg.model.name == "wrn_28_10" and cfg.optim.lr == 0.2 and cfg.optim.milestones == [1, 2]
    assert cfg.aug.method == "keep_cutout" and cfg.train.epochs == 3 and cfg.optim.weight_decay == 1e-4


def test_unknown_key_is_an_error_naming_key_and_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*optim\.learning_rate"):
        load_config(ClsConfig, bad)
    with pytest.raises(ConfigError, match="aug.lenght"):
        load_config(ClsConfig, None, ["aug.lenght=8"])


def test_wrong_type_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(ClsConfig, None, ["train.epochs=many"])
    with pytest.raises(ValueError, match="aug.method"):
        load_config(ClsConfig, None, ["aug.method=keep_mixup"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(ClsConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(ClsConfig, None, ["epochs"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(ClsConfig, None, ["aug.low_res=true", "data.mean=[0.5, 0.5, 0.5]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(ClsConfig, tmp_path / "config.yaml") == cfg


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "classification" / "configs"
    from classification.uda import SemiConfig

    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        cfg = load_config(SemiConfig if f.parent.name == "uda" else ClsConfig, f)
        assert cfg.source, f"{f} does not say where its numbers come from"
