"""Composable augmentation: presets expand as documented, components combine freely, the trainer runs
every combination the issue names, and the saliency pass runs once per batch."""

import pytest

from classification.augment import IMAGE_OPS, PRESETS, REGION_OPS, batch_augment, plan
from classification.engine import Trainer
from classification.schema import AugConfig, ClsConfig
from core import KeepAugment, KeepPipeline
from core.engine.config import ConfigError, load_config

from .conftest import BASE

DOCUMENTED = {  # the table in docs/classification.md
    "none": (None, None, False, False), "cutout": (None, "cutout", False, False),
    "keep_cutout": (None, "cutout", True, False), "random_erasing": (None, "erasing", False, False),
    "keep_random_erasing": (None, "erasing", True, False), "cutmix": (None, "cutmix", False, False),
    "keep_cutmix": (None, "cutmix", True, False), "autoaugment": ("autoaugment", None, False, False),
    "keep_autoaugment": ("autoaugment", None, False, True),
    "autoaugment_cutout": ("autoaugment", "cutout", False, False),
    "keep_autoaugment_cutout": ("autoaugment", "cutout", False, True),
    "randaugment": ("randaugment", None, False, False), "keep_randaugment": ("randaugment", None, False, True),
    "keep_autoaugment_keep_cutout": ("autoaugment", "cutout", True, True),
}


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_presets_expand_as_documented(method):
    p = plan(AugConfig(method=method))
    assert (p.image_op, p.region_op, p.keep_cut, p.keep_paste) == DOCUMENTED[method]
    assert p.pair == p.keep_paste


@pytest.mark.parametrize("overrides, expected", [
    ({"method": "keep_autoaugment", "region": "cutout"}, ("autoaugment", "cutout", False, True)),  # AA + paste + Cutout
    ({"method": "keep_cutout", "image": "randaugment"}, ("randaugment", "cutout", True, False)),  # RA + KeepCutout
    ({"method": "keep_cutmix", "image": "autoaugment", "keep_paste": True}, ("autoaugment", "cutmix", True, True)),
    ({"method": "none", "image": "randaugment", "region": "erasing", "keep_cut": True},
     ("randaugment", "erasing", True, False)),
    ({"method": "keep_cutout", "keep_cut": False}, (None, "cutout", False, False)),  # explicit false wins
])
def test_components_override_the_preset(overrides, expected):
    p = plan(AugConfig(**overrides))
    assert (p.image_op, p.region_op, p.keep_cut, p.keep_paste) == expected


@pytest.mark.parametrize("override, match", [
    ("aug.image=autoaugmnt", f"aug.image must be one of {', '.join(IMAGE_OPS)}"),
    ("aug.region=mixup", f"aug.region must be one of {', '.join(REGION_OPS)}"),
    ("aug.keep_paste=true", "aug.keep_paste needs an image policy"),
    ("aug.region_score=max", "aug.region_score must be sum or mean"),
])
def test_bad_combinations_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(ClsConfig, BASE, ["aug.method=cutout", override])
    with pytest.raises(ConfigError, match="aug.keep_cut needs a region op"):
        load_config(ClsConfig, BASE, ["aug.method=autoaugment", "aug.keep_cut=true"])


def test_batch_augment_builds_one_step_or_a_pipeline():
    both = batch_augment(AugConfig(method="keep_autoaugment", region="cutout", keep_cut=True), 10, None)
    assert isinstance(both, KeepPipeline) and both.paste.op == "paste" and both.region.selective
    single = batch_augment(AugConfig(method="keep_cutout", region_score="mean"), 10, None)
    assert isinstance(single, KeepAugment) and single.region_score == "mean"
    assert batch_augment(AugConfig(method="autoaugment"), 10, None) is None


@pytest.mark.parametrize("extra", [
    ["aug.method=keep_autoaugment", "aug.region=cutout", "aug.keep_cut=true"],  # AA + paste + KeepCutout
    ["aug.method=keep_cutout", "aug.image=randaugment"],  # RandAugment + KeepCutout
    ["aug.method=keep_cutmix", "aug.image=autoaugment", "aug.keep_paste=true"],  # CutMix + paste
])
def test_trainer_runs_combinations_with_one_saliency_pass(extra, tiny_cfg):
    trainer = Trainer(tiny_cfg(*extra))
    backbone = trainer.backbone
    calls = []
    handle = backbone.register_forward_pre_hook(lambda m, a: calls.append(m.training))
    trainer.loader.set_epoch(0)
    batch = next(iter(trainer.loader))
    trainer.run_step(batch)
    handle.remove()
    # one saliency forward (in eval mode) + the training forward: the paste and the cut share the map
    assert calls.count(False) == 1 and calls.count(True) == 1
    metrics = trainer.fit(overwrite=True)
    assert 0.0 <= metrics["val_top1"] <= 100.0 and trainer.epoch == 1


@pytest.mark.parametrize("m", [6, 12, 18, 24])
def test_table4_configs_are_randaugment_n3_at_m_with_cutout_and_the_keep_arm_adds_the_paste(m):
    import torchvision.transforms as T

    from classification.augment import image_transform

    root = BASE.parent
    plain = load_config(ClsConfig, root / f"wrn28_10_table4_aa_m{m}.yaml")
    keep = load_config(ClsConfig, root / f"wrn28_10_table4_keep_aa_m{m}.yaml")
    for cfg in (plain, keep):
        policy = image_transform(cfg.aug)
        assert isinstance(policy, T.RandAugment)
        assert (policy.num_ops, policy.magnitude, policy.num_magnitude_bins) == (3, m, 31)  # 30 = AA's maximum
        assert cfg.model.name == "wrn_28_10" and cfg.train.epochs == 200 and cfg.optim.clip_grad_norm == 5.0
    p, k = plan(plain.aug), plan(keep.aug)
    assert (p.image_op, p.region_op, p.keep_paste) == ("randaugment", "cutout", False)
    assert (k.image_op, k.region_op, k.keep_paste, k.keep_cut) == ("randaugment", "cutout", True, False)
    assert {f: getattr(plain, f) for f in ("model", "optim", "data")} == {f: getattr(keep, f) for f in
                                                                          ("model", "optim", "data")}


def test_keep_autoaugment_rows_keep_the_baselines_cutout():
    root = BASE.parent
    for net in ("wrn28_10", "shake26_2x96d", "pyramidnet272"):
        base = plan(load_config(ClsConfig, root / f"{net}_autoaugment_cutout.yaml").aug)
        keep = plan(load_config(ClsConfig, root / f"{net}_keep_autoaugment.yaml").aug)
        assert (base.image_op, base.region_op, base.keep_paste) == ("autoaugment", "cutout", False)
        assert (keep.image_op, keep.region_op, keep.keep_paste) == ("autoaugment", "cutout", True)  # + paste only


def test_wrn_cutout_rows_use_dropout_0_3():
    root = BASE.parent
    for name in ("wrn28_10_cutout", "wrn28_10_keep_cutout"):
        assert load_config(ClsConfig, root / f"{name}.yaml").model.kwargs == {"dropout": 0.3}
