from pathlib import Path

import pytest

from classification.schema import ClsConfig
from core.engine.config import load_config

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "classification" / "configs" / "cifar10" / "base.yaml"


@pytest.fixture
def tiny_overrides(tmp_path):
    """A seconds-long CIFAR run on the embedded sample."""
    return ["data.dataset=sample", "data.root=", "data.batch_size=16", "data.workers=0", "data.limit_train=48",
            "data.limit_val=32", "model.kwargs={width: 4}", "train.epochs=1", "train.max_steps_per_epoch=2",
            "train.tensorboard=false", "train.progress=false", "train.deterministic=true", "aug.length=8",
            f"train.output_dir={tmp_path / 'run'}"]


@pytest.fixture
def tiny_cfg(tiny_overrides):
    def make(*extra):
        return load_config(ClsConfig, BASE, [*tiny_overrides, *extra])
    return make
