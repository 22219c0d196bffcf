"""Issue #22, the references' order and splits: AutoAugment's CIFAR order (policy, then crop / flip), the ImageNet
AutoAugment arm without colour jitter / lighting (the clean view is the crop / flip only), UDA's labelled split
(the first images; refused on class-sorted data) and its paste under the final Cutout, CutMix per batch, the
area-matched Cutout control, and the AutoAugment + paste + KeepCutout arm."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from classification.augment import (
    AreaMatchedCutout,
    BatchCutMix,
    area_matched_lengths,
    batch_augment,
    mean_clipped_area,
    plan,
)
from classification.data import ArrayImages, TrainView
from classification.schema import AugConfig, ClsConfig
from classification.semi import first_split, labelled_split
from classification.uda import SemiConfig, UDATrainer
from classification.uda_randaugment import UDA_FILL, UDARandAugment, cutout_box
from core import KeepAugment, KeepPipeline
from core.engine.config import ConfigError, load_config

from ..fake_cuda import assert_sync_free, fake_cuda_environment, run_recorded
from .conftest import BASE, ROOT

CIFAR = BASE.parent
IMAGENET = ROOT / "classification" / "configs" / "imagenet"
UDA_BASE = ROOT / "classification" / "configs" / "uda" / "base.yaml"


def bright_images(n: int, size: int = 32) -> ArrayImages:
    """Images with every pixel in [60, 200]: a 0 in a view can only be the crop's zero padding."""
    g = np.random.default_rng(0)
    return ArrayImages(g.integers(60, 201, (n, size, size, 3), dtype=np.uint8), [k % 10 for k in range(n)],
                       [str(c) for c in range(10)])


# -- 1. AutoAugment's CIFAR order ------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["before_crop", "after_crop"])
def test_cifar_policy_order_and_the_pair_shares_the_crop(order, tiny_cfg):
    """With an inverting policy, before_crop leaves the zero padding of pad-and-crop untouched in the augmented
    view (the policy ran on the stored image) and after_crop inverts it to 255; either way the pair is the
    same crop / flip, so the augmented view is 255 - clean wherever the image is."""
    cfg = tiny_cfg("aug.method=keep_autoaugment_cutout", f"aug.policy_order={order}")
    view = TrainView(bright_images(64), cfg.data, cfg.aug)
    view.image_op = ImageOps.invert
    padded = 0
    for i in range(64):
        torch.manual_seed(i)
        clean, augmented, _, _ = view[i]
        pad = clean == 0
        padded += int(pad.any())
        assert torch.equal(augmented[~pad], 255 - clean[~pad])
        assert bool((augmented[pad] == (0 if order == "before_crop" else 255)).all())
    assert padded > 40  # most crops show some padding


def test_before_crop_without_the_pair_and_the_cifar_aa_configs(tiny_cfg):
    cfg = tiny_cfg("aug.method=autoaugment_cutout", "aug.policy_order=before_crop")
    view = TrainView(bright_images(16), cfg.data, cfg.aug)
    view.image_op = ImageOps.invert
    torch.manual_seed(0)
    shown = [view[i][0] for i in range(16)]
    assert all(x.shape == (3, 32, 32) for x in shown) and any(bool((x == 0).any()) for x in shown)
    for name in ("wrn28_10_autoaugment_cutout", "wrn28_10_keep_autoaugment", "pyramidnet272_keep_autoaugment",
                 "shake26_2x96d_autoaugment_cutout", "wrn28_10_table4_aa_m24", "wrn28_10_table4_keep_aa_m6",
                 "wrn28_10_keep_autoaugment_keep_cutout"):
        assert load_config(ClsConfig, CIFAR / f"{name}.yaml").aug.policy_order == "before_crop", name
    assert load_config(ClsConfig, CIFAR / "resnet18_keep_cutout.yaml").aug.policy_order == "after_crop"
    with pytest.raises(ConfigError, match="aug.policy_order must be one of"):
        tiny_cfg("aug.policy_order=first")


# -- 5. ImageNet AutoAugment arm -------------------------------------------------------------------------------
def test_imagenet_autoaugment_arms_have_no_jitter_or_lighting_and_cutmix_keeps_them():
    for depth in (50, 101):
        for kind in ("autoaugment", "keep_autoaugment"):
            cfg = load_config(ClsConfig, IMAGENET / f"resnet{depth}_{kind}.yaml")
            assert (cfg.aug.color_jitter, cfg.aug.lighting, cfg.aug.policy_order) == (0.0, 0.0, "after_crop")
            view = TrainView(bright_images(2, 64), cfg.data, cfg.aug)
            assert view.colour is None and view.lighting is None
        cfg = load_config(ClsConfig, IMAGENET / f"resnet{depth}_cutmix.yaml")
        view = TrainView(bright_images(2, 64), cfg.data, cfg.aug)
        assert view.colour is not None and view.lighting is not None and view.lighting.alphastd == 0.1


def test_imagenet_clean_view_is_the_crop_and_flip_only(tmp_path):
    """With colour jitter on (an override), the paste's clean image is not jittered: jitter and lighting belong to
    the augmented view, after the policy."""
    cfg = load_config(ClsConfig, IMAGENET / "resnet50_keep_autoaugment.yaml",
                      ["aug.color_jitter=0.4", "data.image_size=32", f"train.output_dir={tmp_path}"])
    view = TrainView(bright_images(8, 48), cfg.data, cfg.aug)
    view.image_op = lambda img: img  # identity policy
    view.colour = ImageOps.invert  # a deterministic stand-in for the jitter
    for i in range(8):
        torch.manual_seed(i)
        clean, augmented, _, _ = view[i]
        assert clean.shape == (3, 32, 32) and torch.equal(augmented, 255 - clean)


# -- 2. UDA's labelled split -----------------------------------------------------------------------------------
def test_first_split_is_udas_and_refuses_class_sorted_data():
    labels = [i % 10 for i in range(1000)]  # an interleaved (original-order-like) set
    assert first_split(labels, 40) == (list(range(40)), list(range(40, 1000)))
    with pytest.raises(ValueError, match=r"uda.split=first .* sorted by class .* cover 1 of 10 classes.*"
                                         r"uda.split=balanced"):
        first_split(sorted(labels), 40)
    with pytest.raises(ValueError, match="uda.labels"):
        first_split(labels, 1001)
    chosen, _ = labelled_split(sorted(labels), 40, 10, seed=0)  # the balanced draw still works there
    assert sorted({sorted(labels)[i] for i in chosen}) == list(range(10))


def test_uda_split_default_is_first_and_is_refused_on_the_class_sorted_sample(tmp_path):
    assert load_config(SemiConfig, UDA_BASE).uda.split == "first"
    tiny = ["data.dataset=sample", "data.root=", "data.workers=0", "model.kwargs={}", "uda.labels=100",
            "train.max_steps_per_epoch=1", f"train.output_dir={tmp_path / 'uda'}", "train.tensorboard=false"]
    with pytest.raises(ValueError, match="uda.split=balanced"):
        UDATrainer(load_config(SemiConfig, UDA_BASE, tiny))
    trainer = UDATrainer(load_config(SemiConfig, UDA_BASE, [*tiny, "uda.split=balanced"]))
    split = __import__("json").loads((trainer.out / "split.json").read_text())
    assert split["split"] == "balanced" and len(split["labelled"]) == 100
    with pytest.raises(ConfigError, match="uda.split must be one of first, balanced"):
        load_config(SemiConfig, UDA_BASE, ["uda.split=equal"])


# -- 3. UDA's Keep arm: the paste goes under the final Cutout -------------------------------------------------
def test_marked_strong_view_is_the_same_image_with_the_cutout_box_in_alpha():
    img = Image.fromarray(np.random.default_rng(1).integers(60, 201, (32, 32, 3), dtype=np.uint8))
    op = UDARandAugment()
    torch.manual_seed(3)
    plain = np.asarray(op(img))
    torch.manual_seed(3)
    ops, center = op.draw(32, 32)
    torch.manual_seed(3)
    marked = np.asarray(op.marked(img))
    assert marked.shape == (32, 32, 4) and np.array_equal(marked[..., :3], plain)  # same draws, same RGB
    top, bottom, left, right = cutout_box(center, 16, 32, 32)
    expected = np.full((32, 32), 255, np.uint8)
    expected[top:bottom, left:right] = 0
    assert np.array_equal(marked[..., 3], expected)


def test_uda_keep_pastes_before_the_final_cutout(tmp_path):
    """The strong input is the paste source inside the paste box and the strong view elsewhere, except on the
    final Cutout's pixels, which keep the strong view's own fill even inside the paste box: the paste cannot
    undo the Cutout. (A 24-px paste box, so that it overlaps the Cutout.)"""
    overrides = ["data.dataset=sample", "data.root=", "data.batch_size=8", "data.workers=0", "model.kwargs={width: 4}",
                 "model.name=cifar_resnet18", "uda.labels=100", "uda.split=balanced", "uda.unsup_ratio=2",
                 "train.max_steps_per_epoch=1", "train.tensorboard=false", "train.progress=false",
                 f"train.output_dir={tmp_path / 'uda'}", "aug.method=keep_randaugment", "aug.length=24"]
    trainer = UDATrainer(load_config(SemiConfig, UDA_BASE, overrides))
    batch = next(iter(trainer.train_batches()))
    unl = batch.unlabelled
    assert unl.images.shape[1] == 4  # RGBA: alpha 0 = the final Cutout, moved by the strong view's crop / flip
    seen, forward, keep = {}, trainer.forward, trainer.keep

    def capture_input(x):
        seen["x"] = x
        return forward(x)

    def capture_boxes(*args, **kwargs):
        out = keep(*args, **kwargs)
        seen["boxes"] = out.boxes
        return out

    trainer.forward, trainer.keep = capture_input, capture_boxes
    trainer.run_step(batch)
    n_l, n_u = len(batch.images), len(unl.weak)
    strong_in = seen["x"][n_l + n_u:]
    cut = (unl.images[:, 3:] == 0).expand(-1, 3, -1, -1)
    pasted = torch.zeros_like(cut)
    for k, (x1, y1, x2, y2) in enumerate(seen["boxes"].tolist()):
        pasted[k, :, y1:y2, x1:x2] = True
    own, source = trainer.normalize(unl.images[:, :3]), trainer.normalize(unl.clean)
    assert bool((cut & pasted).any())  # the case that matters happens in this batch
    assert torch.equal(strong_in[cut], own[cut])
    assert torch.equal(strong_in[pasted & ~cut], source[pasted & ~cut])
    assert torch.equal(strong_in[~pasted & ~cut], own[~pasted & ~cut])
    # the Cutout's pixels hold UDA's fill (its mean colour), as in the arm without the paste
    fill = torch.tensor(UDA_FILL, dtype=torch.uint8)
    assert bool((unl.images[:, :3].permute(0, 2, 3, 1)[cut[:, 0]] == fill).all())


# -- 4. CutMix per batch ---------------------------------------------------------------------------------------
def test_batch_cutmix_draws_one_lambda_and_box_per_batch():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    op = BatchCutMix(1.0, 1.0, num_classes=10)
    boxes, lams = [], []
    for _ in range(20):
        out = op(None, x, y, generator=g)
        assert bool((out.boxes == out.boxes[:1]).all()) and bool((out.lam == out.lam[0]).all())
        assert torch.allclose(out.target.sum(1), torch.ones(16)) and out.x.shape == x.shape
        inside = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
        x1, y1, x2, y2 = out.boxes[0].tolist()
        inside[..., y1:y2, x1:x2] = True
        assert torch.equal(out.x, torch.where(inside, x[out.perm], x))
        boxes.append(tuple(out.boxes[0].tolist()))
        lams.append(float(out.lam[0]))
    assert len(set(boxes)) > 10 and min(lams) < 0.9  # random across batches
    skipped = BatchCutMix(1.0, 0.0, num_classes=10)(None, x, y, generator=g)
    assert torch.equal(skipped.x, x) and bool((skipped.lam == 1).all())


def test_cutmix_mode_configs_and_errors(tiny_cfg):
    assert isinstance(batch_augment(AugConfig(method="cutmix", cutmix_mode="batch"), 10, None), BatchCutMix)
    elem = batch_augment(AugConfig(method="cutmix"), 10, None)
    assert isinstance(elem, KeepAugment) and elem.op == "cutmix" and not elem.selective
    with pytest.raises(ConfigError, match="KeepCutMix .* per image by construction.*cutmix_mode=elem"):
        tiny_cfg("aug.method=keep_cutmix", "aug.cutmix_mode=batch")
    with pytest.raises(ConfigError, match="aug.cutmix_mode must be one of elem, batch"):
        tiny_cfg("aug.method=cutmix", "aug.cutmix_mode=pair")
    for depth in (50, 101):
        modes = {kind: load_config(ClsConfig, IMAGENET / f"resnet{depth}_{kind}.yaml").aug.cutmix_mode
                 for kind in ("cutmix", "cutmix_elem", "keep_cutmix")}
        assert modes == {"cutmix": "batch", "cutmix_elem": "elem", "keep_cutmix": "elem"}


def test_batch_cutmix_and_area_matched_cutout_run_in_the_trainer(tiny_cfg):
    from classification.engine import Trainer

    for extra in (["aug.method=cutmix", "aug.cutmix_mode=batch"], ["aug.method=cutout", "aug.cutout_area=40"]):
        trainer = Trainer(tiny_cfg(*extra))
        assert isinstance(trainer.keep, BatchCutMix if "cutmix" in extra[0] else AreaMatchedCutout)
        assert 0.0 <= trainer.fit(overwrite=True)["val_top1"] <= 100.0


@pytest.mark.parametrize("op", [BatchCutMix(1.0, 0.5, num_classes=10), AreaMatchedCutout(167.8)])
def test_batch_ops_are_sync_free_on_fake_cuda(op, monkeypatch):
    g = torch.Generator()  # fake random kernels never read a generator's state
    with fake_cuda_environment(monkeypatch):
        x = torch.randn(8, 3, 32, 32, device="cuda")
        y = torch.randint(0, 10, (8,), device="cuda")
        op(None, x, y, generator=g)  # lazily built constants
        rec = run_recorded(lambda: op(None, x, y, generator=g))
    assert_sync_free(rec, repr(op))


# -- controls: the area-matched Cutout -------------------------------------------------------------------------
def test_area_matched_lengths_are_exact_and_the_measured_area_matches():
    from core import anchor_boxes

    def exact(length, size):  # every anchor of core's "clip" placement, enumerated
        b = anchor_boxes(torch.arange(size * size), length, size, size, "clip")
        return ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).double().mean().item()

    for length in (8, 14, 15, 16, 24):
        assert abs(mean_clipped_area(length, 32, 32) - exact(length, 32)) < 1e-9
    assert mean_clipped_area(16, 32, 32) == 196.0  # Cutout's 196 px at 32 x 32
    side, q = area_matched_lengths(167.8, 32, 32)
    assert side == 14 and 0 < q < 1
    assert abs((1 - q) * mean_clipped_area(14, 32, 32) + q * mean_clipped_area(15, 32, 32) - 167.8) < 1e-9
    g = torch.Generator().manual_seed(0)
    out = AreaMatchedCutout(167.8)(None, torch.randn(20000, 3, 32, 32), None, generator=g)
    b = out.boxes
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    assert abs(area.float().mean().item() - 167.8) < 1.0  # sampling error of 20,000 boxes is about 0.5 px
    assert torch.equal((out.x == 0).all(1).flatten(1).sum(1), area)  # the boxes are what is filled


def test_cutout_area_needs_a_plain_cutout(tiny_cfg):
    with pytest.raises(ConfigError, match="aug.cutout_area=160.0 .* without aug.keep_cut"):
        tiny_cfg("aug.method=keep_cutout", "aug.cutout_area=160")
    with pytest.raises(ConfigError, match="aug.cutout_area"):
        tiny_cfg("aug.method=cutmix", "aug.cutout_area=160")
    with pytest.raises(ValueError, match="aug.cutout_area must be in"):
        area_matched_lengths(2000.0, 32, 32)


# -- 6. AutoAugment + paste + KeepCutout -----------------------------------------------------------------------
def test_keep_autoaugment_keep_cutout_arm():
    p = plan(AugConfig(method="keep_autoaugment_keep_cutout"))
    assert (p.image_op, p.region_op, p.keep_cut, p.keep_paste) == ("autoaugment", "cutout", True, True)
    step = batch_augment(AugConfig(method="keep_autoaugment_keep_cutout"), 10, None)
    assert isinstance(step, KeepPipeline) and step.paste.op == "paste" and step.region.selective
    for net in ("wrn28_10", "shake26_2x96d", "pyramidnet272"):
        one = load_config(ClsConfig, CIFAR / f"{net}_keep_autoaugment.yaml")
        two = load_config(ClsConfig, CIFAR / f"{net}_keep_autoaugment_keep_cutout.yaml")
        assert (one.aug.plan.keep_cut, two.aug.plan.keep_cut) == (False, True)
        assert {f: getattr(one, f) for f in ("model", "optim", "data")} == {f: getattr(two, f) for f in
                                                                              ("model", "optim", "data")}
