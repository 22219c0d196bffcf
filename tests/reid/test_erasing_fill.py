"""Issue #22 item 7: ``aug.erasing_fill`` - BoT's quirk (the mean's raw values written into normalised space,
the default: the baseline numbers are BoT's), the mean colour (0 in normalised space) or per-pixel random
values (the paper's wording) - reaches the trainer's erasing step."""

import pytest
import torch

from core import KeepAugment
from core.engine.config import ConfigError, load_config
from reid.schema import IMAGENET_MEAN, AugConfig, ReidConfig

from .test_train import BASE, MINI, test_mini_subset


def test_fill_values_and_the_default_is_bots():
    assert AugConfig().erasing_fill == "bot"
    for name in ("base", "bot_r50", "bot_r50_keep", "bot_r101", "bot_r101_keep"):
        assert load_config(ReidConfig, BASE.parent / f"{name}.yaml").aug.erasing_fill == "bot"
    assert AugConfig(erasing_fill="bot").erasing_fill_value([0.5, 0.4, 0.3]) == [0.5, 0.4, 0.3]  # data.mean's
    assert AugConfig(erasing_fill="mean").erasing_fill_value(IMAGENET_MEAN) == 0.0
    assert AugConfig(erasing_fill="random").erasing_fill_value(IMAGENET_MEAN) == "random"
    with pytest.raises(ConfigError, match="aug.erasing_fill must be one of bot, mean, random"):
        load_config(ReidConfig, BASE, ["aug.erasing_fill=zero"])


@pytest.mark.parametrize("fill", ["bot", "mean", "random"])
def test_the_erased_box_holds_the_fill(fill):
    """What the three fills write into a normalised batch (the op the trainer builds, on its own)."""
    keep = KeepAugment("erasing", selective=False, p=1.0, fill=AugConfig(erasing_fill=fill).erasing_fill_value(
        IMAGENET_MEAN), erasing_area=(0.1, 0.1), erasing_ratio=(1.0, 1.0))
    x = torch.full((4, 3, 32, 16), 7.0)  # no normalised pixel is 7: the box is where it changed
    out = keep(None, x, generator=torch.Generator().manual_seed(0))
    box = out.x != 7.0
    assert bool(box.any())
    if fill == "bot":  # BoT: (0.485, 0.456, 0.406) in normalised space, not the mean colour (which is 0 there)
        for c, m in enumerate(IMAGENET_MEAN):
            assert bool((out.x[:, c][box[:, c]] == torch.tensor(m)).all())
    elif fill == "mean":
        assert bool((out.x[box] == 0).all())
    else:
        assert out.x[box].std() > 0.5  # per-pixel standard normal values


def test_trainer_builds_its_erasing_with_the_configured_fill(tmp_path):
    from reid.engine import ReidTrainer

    if not (MINI / "Market-1501-v15.09.15").is_dir():
        test_mini_subset()
    tiny = [f"data.root={MINI}", "model.pretrained=", "model.depth=18", "data.p=4", "data.k=2", "data.height=64",
            "data.width=32", "data.workers=0", "train.device=cpu", "train.progress=false", "train.tensorboard=false",
            f"train.output_dir={tmp_path / 'reid'}"]
    assert ReidTrainer(load_config(ReidConfig, BASE, tiny)).keep.fill == IMAGENET_MEAN
    assert ReidTrainer(load_config(ReidConfig, BASE, [*tiny, "aug.erasing_fill=mean"])).keep.fill == 0.0
