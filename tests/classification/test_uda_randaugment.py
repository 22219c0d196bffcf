"""UDA's strong augmentation (classification.uda_randaugment) against references written from
google-research/uda @ 960684e3 (image/randaugment/augmentation_transforms.py, policies.py, image/preprocess.py,
image/data.py), and the UDA trainer using it."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from classification.augment import image_transform
from classification.data import ArrayImages, TrainView
from classification.uda import SemiConfig, UDATrainer, UnlabelledView, uda_geometric
from classification.uda_randaugment import OPS, UDA_FILL, UDARandAugment, apply_op, finish, op_parameter
from core.engine.config import load_config

from .conftest import ROOT

UDA_BASE = ROOT / "classification" / "configs" / "uda" / "base.yaml"
FILL = np.array(UDA_FILL, dtype=np.uint8)
MAGS = range(1, 10)


def rng_image(h=10, w=10, lo=0, hi=256, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, (h, w, 3), dtype=np.uint8)


def run(x: np.ndarray, *ops) -> np.ndarray:
    """Apply ``(name, magnitude, sign[, center])`` ops in order, then UDA's unwrap (alpha 0 -> fill), no Cutout."""
    img = Image.fromarray(x).convert("RGBA")
    for op in ops:
        img = apply_op(img, *op)
    return np.asarray(finish(img, None))


def pil_affine_reference(x: np.ndarray, coeffs, fill=FILL) -> np.ndarray:
    """PIL AFFINE with NEAREST, written out: output (col u, row v) takes input (a u' + b v' + c, d u' + e v' + f)
    at the pixel centre (u' = u + 0.5, v' = v + 0.5), floored; outside -> fill."""
    a, b, c, d, e, f = coeffs
    h, w = x.shape[:2]
    out = np.empty_like(x)
    for v in range(h):
        for u in range(w):
            xs, ys = math.floor(a * (u + .5) + b * (v + .5) + c), math.floor(d * (u + .5) + e * (v + .5) + f)
            out[v, u] = x[ys, xs] if 0 <= xs < w and 0 <= ys < h else fill
    return out


# ---- magnitude -> parameter, from UDA's formulas (PARAMETER_MAX = 10) -------------------------------------

def test_parameter_tables():
    # Posterize: bits = 4 - int(m * 4 / 10); Solarize: threshold = 256 - int(m * 256 / 10)
    assert [op_parameter("Posterize", m) for m in MAGS] == [4, 4, 3, 3, 2, 2, 2, 1, 1]
    assert [op_parameter("Solarize", m) for m in MAGS] == [231, 205, 180, 154, 128, 103, 77, 52, 26]
    assert [op_parameter("Rotate", m) for m in MAGS] == [3, 6, 9, 12, 15, 18, 21, 24, 27]  # m / 10 * 30 degrees
    assert [op_parameter("TranslateX", m) for m in MAGS] == list(MAGS)  # int(m * 10 / 10) pixels
    assert [op_parameter("TranslateY", m) for m in MAGS] == list(MAGS)
    assert [op_parameter("Cutout", m) for m in MAGS] == [2, 4, 6, 8, 10, 12, 14, 16, 18]  # int(m * 20 / 10)
    for name in ("ShearX", "ShearY"):
        assert [op_parameter(name, m) for m in MAGS] == pytest.approx([0.03 * m for m in MAGS])
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):  # m * 1.8 / 10 + 0.1
        assert [op_parameter(name, m) for m in MAGS] == pytest.approx(
            [0.28, 0.46, 0.64, 0.82, 1.0, 1.18, 1.36, 1.54, 1.72])
    for name in ("Invert", "AutoContrast", "Equalize"):
        assert op_parameter(name, 7) is None
    assert OPS == ("Invert", "Cutout", "Sharpness", "AutoContrast", "Posterize", "ShearX", "TranslateX",
                   "TranslateY", "ShearY", "Rotate", "Equalize", "Contrast", "Color", "Solarize", "Brightness")


# ---- each op on pixels --------------------------------------------------------------------------------

def test_invert_posterize_solarize():
    x = rng_image(16, 16)
    assert np.array_equal(run(x, ("Invert", 4, 1)), 255 - x)
    for m, bits in [(1, 4), (3, 3), (5, 2), (7, 2), (9, 1)]:
        mask = 256 - 2 ** (8 - bits)
        assert np.array_equal(run(x, ("Posterize", m, 1)), x & mask), m
    for m, thr in [(1, 231), (4, 154), (5, 128), (9, 26)]:
        assert np.array_equal(run(x, ("Solarize", m, 1)), np.where(x >= thr, 255 - x, x)), m


@pytest.mark.parametrize("name,axis", [("TranslateX", 1), ("TranslateY", 0)])
@pytest.mark.parametrize("m", [1, 4, 9])
@pytest.mark.parametrize("sign", [1, -1])
def test_translate_pixels_and_fill(name, axis, m, sign):
    x = rng_image(12, 12, lo=1, seed=m)
    t = sign * m  # PIL: output pixel k takes input pixel k + t (content moves by -t); vacated -> the mean
    ref = np.broadcast_to(FILL, x.shape).copy()
    n = x.shape[axis]
    src = [k + t for k in range(n)]
    for k, s in enumerate(src):
        if 0 <= s < n:
            if axis == 1:
                ref[:, k] = x[:, s]
            else:
                ref[k] = x[s]
    assert np.array_equal(run(x, (name, m, sign)), ref)


@pytest.mark.parametrize("m", [2, 5, 9])
@pytest.mark.parametrize("sign", [1, -1])
def test_shear(m, sign):
    x = rng_image(10, 10, seed=m)
    s = sign * 0.03 * m
    assert np.array_equal(run(x, ("ShearX", m, sign)), pil_affine_reference(x, (1, s, 0, 0, 1, 0)))
    assert np.array_equal(run(x, ("ShearY", m, sign)), pil_affine_reference(x, (1, 0, 0, s, 1, 0)))


@pytest.mark.parametrize("m", [1, 5, 9])
@pytest.mark.parametrize("sign", [1, -1])
def test_rotate(m, sign):
    x = rng_image(32, 32, lo=1, seed=m)
    deg = sign * m / 10 * 30
    ref = np.asarray(Image.fromarray(x).convert("RGBA").rotate(deg))  # counter-clockwise for deg > 0, nearest
    ref_rgb = np.where(ref[..., 3:] == 0, FILL, ref[..., :3])
    out = run(x, ("Rotate", m, sign))
    assert np.array_equal(out, ref_rgb)
    assert (out == FILL).all(-1)[0, 0] and (out == FILL).all(-1).sum() > 0  # corners rotate out: the mean
    # direction: a horizontal bar right of the centre goes up for a counter-clockwise (positive) rotation
    bar = np.zeros((33, 33, 3), np.uint8) + 1
    bar[16, 20:33] = 255
    rows = np.nonzero((run(bar, ("Rotate", 9, sign)) == 255).all(-1))[0]
    assert (rows.mean() < 16) == (sign > 0)


def _gray(x):  # PIL's RGB -> L (ITU-R 601-2, 16-bit fixed point)
    x = x.astype(np.int64)
    return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


@pytest.mark.parametrize("m", [1, 5, 9])
def test_enhancers(m):
    x = rng_image(12, 12, seed=m)
    f = 0.1 + 1.8 * m / 10
    xf = x.astype(np.float64)
    refs = {
        "Brightness": xf * f,
        "Color": _gray(x)[..., None] + f * (xf - _gray(x)[..., None]),
        "Contrast": int(_gray(x).mean() + 0.5) + f * (xf - int(_gray(x).mean() + 0.5)),
    }
    for name, ref in refs.items():
        out = run(x, (name, m, -1)).astype(np.float64)  # no sign: -1 is ignored
        assert np.abs(out - np.clip(ref, 0, 255)).max() <= 1.0, name
    # Sharpness: blend with PIL's SMOOTH (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, / 13), interior pixels
    k = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13
    smooth = sum(k[i, j] * xf[i:i + 10, j:j + 10] for i in range(3) for j in range(3))
    ref = np.clip(smooth + f * (xf[1:-1, 1:-1] - smooth), 0, 255)
    assert np.abs(run(x, ("Sharpness", m, 1)).astype(np.float64)[1:-1, 1:-1] - ref).max() <= 1.5


def test_autocontrast_and_equalize():
    x = rng_image(12, 12, lo=40, hi=200)
    lo, hi = x.reshape(-1, 3).min(0), x.reshape(-1, 3).max(0)
    ref = (x.astype(np.float64) - lo) * 255 / (hi - lo)
    assert np.abs(run(x, ("AutoContrast", 3, 1)) - ref).max() <= 1.0
    out = run(x, ("AutoContrast", 3, 1))
    assert (out.reshape(-1, 3).min(0) == 0).all() and (out.reshape(-1, 3).max(0) >= 254).all()  # PIL truncates
    assert np.array_equal(run(x, ("Equalize", 8, 1)), np.asarray(ImageOps.equalize(Image.fromarray(x))))


def test_cutout_op_box_clipped_at_borders():
    x = rng_image(32, 32, lo=200)  # no pixel is the fill
    for m, (cy, cx) in [(3, (1, 30)), (9, (16, 16)), (1, (0, 0)), (8, (31, 5))]:
        half = m  # side int(m * 20 / 10) = 2m, box [c - m, c + m) clipped
        out = run(x, ("Cutout", m, 1, (cy, cx)))
        is_fill = (out == FILL).all(-1)
        ref = np.zeros((32, 32), bool)
        ref[max(0, cy - half):min(32, cy + half), max(0, cx - half):min(32, cx + half)] = True
        assert np.array_equal(is_fill, ref), (m, cy, cx)
        assert np.array_equal(out[~ref], x[~ref])


def test_fills_follow_udas_alpha():
    """Geometric fills and Cutout-as-op carry alpha 0 and become the mean at pil_unwrap - unless a later op
    converts to RGB (Invert, AutoContrast, Equalize, Posterize, Solarize), which drops the alpha: the fill's
    own RGB is then processed like content. Enhancers keep the alpha."""
    x = rng_image(12, 12, lo=1)
    shifted = run(x, ("TranslateX", 3, 1))
    assert (shifted[:, -3:] == FILL).all()
    assert (run(x, ("TranslateX", 3, 1), ("Invert", 1, 1))[:, -3:] == 255).all()  # black (0, 0, 0) inverted
    assert (run(x, ("TranslateX", 3, 1), ("Color", 2, 1))[:, -3:] == FILL).all()
    assert (run(x, ("TranslateX", 3, 1), ("Brightness", 9, 1))[:, -3:] == FILL).all()
    assert (run(x, ("Cutout", 2, 1, (6, 6)))[4:8, 4:8] == FILL).all()
    inv = run(x, ("Cutout", 2, 1, (6, 6)), ("Invert", 1, 1))[4:8, 4:8]
    assert (inv == 255 - np.array([125, 122, 113], np.uint8)).all()  # UDA's literal (125, 122, 113, 0)


# ---- the draw ------------------------------------------------------------------------------------------

def chi2(counts, expected):
    return sum((c - e) ** 2 / e for c, e in zip(counts, expected))


def test_draw_distribution():
    t, n = UDARandAugment(), 12000
    torch.manual_seed(0)
    names, mags, pairs, applied, signs, centers = Counter(), Counter(), Counter(), [], [], Counter()
    for _ in range(n):
        ops, (cy, cx) = t.draw(32, 32)
        assert len(ops) == 2
        pairs[(ops[0].name, ops[1].name)] += 1
        centers[cy] += 1
        for op in ops:
            names[op.name] += 1
            mags[op.magnitude] += 1
            applied.append(op.applied)
            if op.applied and op.name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
                signs.append(op.sign)
            if op.applied and op.name == "Cutout":
                assert 0 <= op.center[0] < 32 and 0 <= op.center[1] < 32
            if not op.applied or op.name not in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
                assert op.sign == 1
    assert set(names) == set(OPS) and set(mags) == set(range(1, 10))
    # chi-square at p = 0.001: df 14 -> 36.12, df 8 -> 26.12, df 224 -> 295.2 (Wilson-Hilferty), df 31 -> 61.1
    assert chi2([names[o] for o in OPS], [2 * n / 15] * 15) < 36.12
    assert chi2([mags[m] for m in MAGS], [2 * n / 9] * 9) < 26.12
    assert chi2([pairs[(a, b)] for a in OPS for b in OPS], [n / 225] * 225) < 295.2  # independent, repeats allowed
    assert chi2([centers[k] for k in range(32)], [n / 32] * 32) < 61.1
    assert abs(np.mean(applied) - 0.5) < 4 * math.sqrt(0.25 / len(applied))
    assert abs(np.mean(np.array(signs) == -1) - 0.5) < 4 * math.sqrt(0.25 / len(signs))


def test_final_cutout_always_present_and_clipped():
    t = UDARandAugment()
    x = rng_image(32, 32, seed=3)
    sizes = Counter()
    for seed in range(200):
        torch.manual_seed(seed)
        _, (cy, cx) = t.draw(32, 32)
        torch.manual_seed(seed)
        out = np.asarray(t(Image.fromarray(x)))
        top, bottom, left, right = max(0, cy - 8), min(32, cy + 8), max(0, cx - 8), min(32, cx + 8)
        assert (out[top:bottom, left:right] == FILL).all(), seed
        sizes[(bottom - top, right - left)] += 1
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert sizes[(16, 16)] > 0 and any(h < 16 or w < 16 for h, w in sizes)
    assert all(8 <= h <= 16 and 8 <= w <= 16 for h, w in sizes)
    # cutout=0: no final box; two unapplied ops then leave the image untouched
    plain = UDARandAugment(cutout=0)
    assert np.array_equal(np.asarray(plain.apply(Image.fromarray(x), [], None)), x)


def test_deterministic_under_a_torch_seed():
    t = UDARandAugment()
    imgs = [Image.fromarray(rng_image(32, 32, seed=s)) for s in range(20)]

    def outs(seed):
        torch.manual_seed(seed)
        return [np.asarray(t(im)) for im in imgs]

    a, b, c = outs(5), outs(5), outs(6)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


# ---- wiring --------------------------------------------------------------------------------------------

def test_image_transform_and_configs():
    cfg = load_config(SemiConfig, UDA_BASE)
    op = image_transform(cfg.aug)
    assert isinstance(op, UDARandAugment) and op.cutout == 16
    cfg = load_config(SemiConfig, UDA_BASE, ["aug.image=randaugment"])
    assert type(image_transform(cfg.aug)).__name__ == "RandAugment"  # torchvision's, still reachable
    for name in ("wrn28_2_4000_randaugment", "wrn28_2_2500_keep_randaugment"):
        cfg = load_config(SemiConfig, UDA_BASE.parent / f"{name}.yaml")
        assert isinstance(image_transform(cfg.aug), UDARandAugment)
    with pytest.raises(ValueError, match="uda_randaugment"):
        load_config(SemiConfig, UDA_BASE, ["aug.image=autoaugment"])
    with pytest.raises(ValueError, match="uda.unlabelled"):
        load_config(SemiConfig, UDA_BASE, ["uda.unlabelled=some"])


def test_unlabelled_views_independent_reflect_and_aligned_source():
    """clean and strong have their own flip / crop (reflect padding: no black border); the paste source is
    the clean image under exactly the strong view's flip / crop."""
    cfg = load_config(SemiConfig, UDA_BASE, ["aug.method=keep_randaugment", "data.dataset=sample", "data.root="])
    imgs = np.stack([rng_image(32, 32, lo=60, hi=200, seed=s) for s in range(40)])
    view = uda_geometric(TrainView(ArrayImages(imgs, [0] * 40, ["a"]), cfg.data, cfg.aug), cfg.data)
    assert isinstance(view.image_op, UDARandAugment) and view.pair
    view.image_op = lambda img: img  # identity policy: strong = the clean image under its own crop/flip
    ds = UnlabelledView(view, list(range(40)))
    differ = 0
    for k in range(40):
        torch.manual_seed(k)
        clean, strong, source, i = ds[k]
        assert i == k and clean.shape == strong.shape == source.shape == (3, 32, 32)
        assert torch.equal(strong, source)  # the replayed draws
        assert clean.min() >= 60 and strong.min() >= 60  # reflect, not zero, padding
        differ += not torch.equal(clean, strong)
    assert differ > 30  # independent crops / flips


@pytest.fixture
def uda_overrides(tmp_path):  # as tests/classification/test_uda.py, with a narrow ResNet-18 for speed
    return ["data.dataset=sample", "data.root=", "data.batch_size=10", "data.workers=0", "data.limit_val=40",
            "model.name=cifar_resnet18", "model.kwargs={width: 4}", "uda.labels=100", "uda.unsup_ratio=2",
            "uda.split=balanced",
            "train.epochs=1", "train.max_steps_per_epoch=2", "train.tensorboard=false", "train.progress=false",
            "train.deterministic=true",
            f"train.output_dir={tmp_path / 'uda'}"]


@pytest.mark.parametrize("extra", [["aug.method=keep_randaugment"], ["aug.image=randaugment", "uda.unlabelled=rest"]])
def test_uda_trainer_uses_it(extra, uda_overrides):
    trainer = UDATrainer(load_config(SemiConfig, UDA_BASE, [*uda_overrides, *extra]))
    metrics = trainer.fit()
    assert trainer.step == 2 and 0 <= metrics["mask_rate"] <= 1 and metrics["unsup_loss"] >= 0
    n = len(trainer.unlabelled_set.view.base)
    labelled = set(trainer.labelled_set.indices)
    op = trainer.unlabelled_set.view.image_op
    if "aug.image=randaugment" in extra:
        assert type(op).__name__ == "RandAugment"
        assert sorted(trainer.unlabelled_set.indices) == sorted(set(range(n)) - labelled)
    else:
        assert isinstance(op, UDARandAugment)
        assert trainer.unlabelled_set.indices == list(range(n))  # UDA: the whole training set
        assert len(trainer.unlabelled_set[0]) == 4  # clean, strong, paste source, index
    crop = trainer.labelled_set.dataset.geometric.transforms[-1]
    assert crop.padding_mode == "reflect" and crop.padding == 4


def test_contrast_is_pils_enhancer_at_udas_factor():  # m = 2 -> 2 * 1.8 / 10 + 0.1 = 0.46, exactly
    x = Image.fromarray(rng_image(8, 8)).convert("RGBA")
    assert np.array_equal(np.asarray(apply_op(x, "Contrast", 2)), np.asarray(ImageEnhance.Contrast(x).enhance(0.46)))
