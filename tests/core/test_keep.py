import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import EarlyHead, KeepAugment, region_scores, region_threshold


class TinyNet(nn.Module):
    def __init__(self, k=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, k)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def batch(b=8, h=16, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, h, w, generator=g), torch.randint(0, 4, (b,), generator=g)


def box_sum(s, boxes):
    return torch.stack([s[i, y1:y2, x1:x2].double().sum() for i, (x1, y1, x2, y2) in enumerate(boxes.tolist())])


@pytest.mark.parametrize("low_res,early", [(False, False), (True, False), (False, True), (True, True)])
def test_keep_cutout_cuts_below_threshold(low_res, early):
    torch.manual_seed(0)
    model = TinyNet()
    head = EarlyHead(model, "stem", 4) if early else None
    keep = KeepAugment("cutout", 5, low_res=low_res, early_head=head)
    x, y = batch()
    out = keep(model, x, y, generator=torch.Generator().manual_seed(1))
    thr = region_threshold(region_scores(out.saliency, 5), 0.6)
    assert (box_sum(out.saliency, out.boxes) < thr).all()
    m = torch.zeros_like(x, dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(out.boxes.tolist()):
        m[i, :, y1:y2, x1:x2] = True
    assert (out.x[m] == 0).all() and torch.equal(out.x[~m], x[~m])
    assert torch.equal(out.target, y)


def test_keep_paste_pastes_above_threshold():
    model = TinyNet()
    x, y = batch()
    x_aug = -x
    out = KeepAugment("paste", 4)(model, x, y, x_aug=x_aug, generator=torch.Generator().manual_seed(2))
    thr = region_threshold(region_scores(out.saliency, 4), 0.6)
    assert (box_sum(out.saliency, out.boxes) > thr).all()
    for i, (x1, y1, x2, y2) in enumerate(out.boxes.tolist()):
        assert torch.equal(out.x[i, :, y1:y2, x1:x2], x[i, :, y1:y2, x1:x2])
        assert (out.x[i] == x_aug[i]).float().mean() >= 1 - (x2 - x1) * (y2 - y1) / 192 - 1e-6


def test_keep_cutmix_targets_and_lambda():
    model = TinyNet()
    x, y = batch(16)
    out = KeepAugment("cutmix", num_classes=4)(model, x, y, generator=torch.Generator().manual_seed(3))
    own = (out.x == x).all(1).float().mean((1, 2))
    assert torch.allclose(out.lam, own)
    expected = out.lam[:, None] * nn.functional.one_hot(y, 4) + (1 - out.lam[:, None]) * nn.functional.one_hot(
        y[out.perm], 4)
    assert torch.allclose(out.target, expected)
    assert sorted(out.perm.tolist()) == list(range(16))
    # selective: the cut region of each image avoids its important part
    sizes = torch.stack([out.boxes[:, 3] - out.boxes[:, 1], out.boxes[:, 2] - out.boxes[:, 0]], 1)
    assert ((sizes[:, 0] <= 16) & (sizes[:, 1] <= 12)).all()


def test_keep_erasing_inside_image():
    model = TinyNet()
    x, y = batch(32)
    out = KeepAugment("erasing", p=1.0, fill=0.0)(model, x, y, generator=torch.Generator().manual_seed(4))
    b = out.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 12).all() and (b[:, 3] <= 16).all()
    applied = b[:, 2] > b[:, 0]
    assert applied.float().mean() > 0.8


def test_same_seed_same_boxes_and_plain_ops_skip_saliency():
    model = TinyNet()
    x, y = batch()
    for op in ("cutout", "erasing", "cutmix", "paste"):
        keep = KeepAugment(op, 4 if op in ("cutout", "paste") else None, num_classes=4 if op == "cutmix" else None)
        a = keep(model, x, y, x_aug=x.flip(3), generator=torch.Generator().manual_seed(5))
        b = keep(model, x, y, x_aug=x.flip(3), generator=torch.Generator().manual_seed(5))
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.x, b.x)
    plain = KeepAugment("cutout", 4, selective=False)
    out = plain(None, x, y, generator=torch.Generator().manual_seed(6))
    assert out.saliency is None and out.boxes.shape == (8, 4)


def test_sample_then_apply_is_deterministic():
    model = TinyNet()
    x, y = batch()
    keep = KeepAugment("cutout", 4)
    params = keep.sample(model, x, y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(keep.apply(params, x).x, keep.apply(params, x).x)


@pytest.mark.parametrize("h,w", [(1, 1), (7, 5)])
def test_edge_cases(h, w):
    model = TinyNet()
    x, y = batch(1, h, w)
    out = KeepAugment("cutout", 1)(model, x, y)
    assert int(((out.x == 0).all(1)).sum()) == 1
    whole = KeepAugment("cutout", (h, w))(model, x, y)
    assert whole.x.shape == x.shape


def test_uint8_images_with_given_saliency_path():
    x = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    out = KeepAugment("erasing", selective=False, fill="random")(None, x, generator=torch.Generator().manual_seed(0))
    assert out.x.dtype == torch.uint8


def test_bad_arguments():
    model = TinyNet()
    x, y = batch()
    with pytest.raises(ValueError, match="op"):
        KeepAugment("mixup")
    with pytest.raises(ValueError, match="tau"):
        KeepAugment("cutout", tau=-0.1)
    with pytest.raises(ValueError, match="size"):
        KeepAugment("cutmix", 8, num_classes=4)
    with pytest.raises(ValueError, match="num_classes"):  # at construction, not at the first call
        KeepAugment("cutmix")
    with pytest.raises(ValueError, match="larger than the image"):
        KeepAugment("cutout", 20)(model, x, y)
    with pytest.raises(ValueError, match="y has batch size"):
        KeepAugment("cutout", 4)(model, x, y[:3])
    with pytest.raises(ValueError, match="x_aug"):
        KeepAugment("paste", 4)(model, x, y)
    broken = TinyNet()
    with torch.no_grad():
        broken.fc.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="saliency contains non-finite"):
        KeepAugment("cutout", 4)(broken, x, y)
    with pytest.raises(ValueError, match="target"):
        KeepAugment("cutout", 4, target="label")(model, x)


def test_repr_lists_options():
    r = repr(KeepAugment("cutout", 16, low_res=True))
    assert "op='cutout'" in r and "low_res=0.5" in r and "tau=0.6" in r


# ---------------------------------------------- every selective op against the saliency, and its pixels


def pooled_scores(s: torch.Tensor, h: int, w: int, placement: str, reduce: str) -> torch.Tensor:
    """Scores ``(H, W)`` of every candidate box of one map by pooling (independent of core's summed-area
    table): the sum, or the mean over the box clipped to the image; NaN where an "inside" box does not fit."""
    height, width = s.shape
    x = s[None, None].double()
    if placement == "clip":
        pad = (w // 2, w - w // 2 - 1, h // 2, h - h // 2 - 1)
        sums = F.avg_pool2d(F.pad(x, pad), (h, w), stride=1)[0, 0] * h * w
        inside = F.avg_pool2d(F.pad(torch.ones_like(x), pad), (h, w), stride=1)[0, 0]
        return sums / (inside * h * w) if reduce == "mean" else sums
    out = torch.full((height, width), float("nan"), dtype=torch.float64)
    out[: height - h + 1, : width - w + 1] = F.avg_pool2d(x, (h, w), stride=1)[0, 0] * (
        1 if reduce == "mean" else h * w)
    return out


def capture_sizes(monkeypatch) -> list:
    """Record the region sizes ``KeepAugment.sample`` passes to ``selective_boxes`` (per-image for erasing and
    cutmix, whose clipped boxes do not tell them)."""
    import core.keep

    seen, original = [], core.keep.selective_boxes

    def spy(saliency, size, *args, **kwargs):
        seen.append(size)
        return original(saliency, size, *args, **kwargs)

    monkeypatch.setattr(core.keep, "selective_boxes", spy)
    return seen


SELECTIVE = [  # op, tau, region_score: both sides of the threshold, both scores, tau away from its default
    ("cutout", 0.6, "sum"), ("cutout", 0.3, "mean"),
    ("erasing", 0.6, "sum"), ("erasing", 0.25, "mean"),
    ("cutmix", 0.6, "sum"), ("cutmix", 0.2, "mean"),
    ("paste", 0.6, "sum"), ("paste", 0.9, "mean"),
]


@pytest.mark.parametrize("op,tau,score", SELECTIVE)
def test_selective_op_boxes_respect_the_saliency_threshold_and_pixels(op, tau, score, monkeypatch):
    """Each chosen box scores <= the tau-quantile of all candidate scores of its image (selective cut: cutout,
    erasing, cutmix) or >= it (selective paste), scores computed independently; and the pixels inside the box
    are the op's, those outside are the input's."""
    torch.manual_seed(0)
    model = TinyNet()
    b, h, w = 16, 16, 12
    x, y = batch(b, h, w, seed=1)
    x_aug = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(2))
    keep = KeepAugment(op, 5 if op in ("cutout", "paste") else None, tau=tau, region_score=score,
                       num_classes=4 if op == "cutmix" else None, fill=0.5 if op == "cutout" else None)
    seed = 10 + SELECTIVE.index((op, tau, score))
    seen = capture_sizes(monkeypatch)
    out = keep(model, x, y, x_aug=x_aug, generator=torch.Generator().manual_seed(seed))
    assert len(seen) == 1
    sizes = seen[0] if isinstance(seen[0], torch.Tensor) else torch.tensor([[5, 5]] * b)
    placement = "inside" if op == "erasing" else "clip"
    checked = 0
    for i, (x1, y1, x2, y2) in enumerate(out.boxes.tolist()):
        bh, bw = sizes[i].tolist()
        if bh == 0 or bw == 0:  # nothing drawn for this image: left unchanged
            assert (x2 - x1) * (y2 - y1) == 0 and torch.equal(out.x[i], x_aug[i] if op == "paste" else x[i])
            continue
        if placement == "inside":
            assert (y2 - y1, x2 - x1) == (bh, bw)
        thr = torch.nanquantile(pooled_scores(out.saliency[i], bh, bw, placement, score).flatten(), tau)
        region = out.saliency[i, y1:y2, x1:x2].double()
        got = region.mean() if score == "mean" else region.sum()
        slack = 1e-9 * out.saliency[i].double().sum()
        assert (got >= thr - slack) if op == "paste" else (got <= thr + slack), (i, got.item(), thr.item())
        checked += 1
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        outside_src = x_aug[i] if op == "paste" else x[i]
        assert torch.equal(out.x[i][:, ~inside], outside_src[:, ~inside])
        got_in = out.x[i][:, inside]
        if op == "cutout":
            assert (got_in == 0.5).all()
        elif op == "erasing":  # random normal fill: every pixel differs from the input's
            assert (got_in != x[i][:, inside]).all() and got_in.std() > 0.5
        elif op == "cutmix":
            assert torch.equal(got_in, x[out.perm[i]][:, inside])
        else:
            assert torch.equal(got_in, x[i][:, inside])
    assert checked >= b // 2


@pytest.mark.parametrize("fill", [0.0, (0.1, 0.2, 0.3), "mean", "channel_random"])
def test_erasing_fills_exactly_its_box(fill):
    model = TinyNet()
    x, y = batch(12)
    out = KeepAugment("erasing", fill=fill)(model, x, y, generator=torch.Generator().manual_seed(8))
    applied = 0
    for i, (x1, y1, x2, y2) in enumerate(out.boxes.tolist()):
        inside = torch.zeros(16, 12, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        applied += bool(inside.any())
        assert torch.equal(out.x[i][:, ~inside], x[i][:, ~inside])
        got = out.x[i][:, inside]
        if fill == "mean":
            expected = x[i].mean((1, 2))[:, None].expand_as(got)
        elif fill == "channel_random":
            expected = got[:, :1].expand_as(got)  # one value per channel
        else:
            expected = torch.tensor(fill if isinstance(fill, tuple) else (fill,) * 3)[:, None].expand_as(got)
        assert torch.allclose(got, expected) and not torch.equal(got, x[i][:, inside])
    assert applied >= 10


def test_plain_ops_apply_their_pixels_too():
    x, y = batch(8)
    x_aug = -x
    for op in ("cutout", "erasing", "cutmix", "paste"):
        keep = KeepAugment(op, 4 if op in ("cutout", "paste") else None, selective=False,
                           num_classes=4 if op == "cutmix" else None)
        out = keep(None, x, y, x_aug=x_aug, generator=torch.Generator().manual_seed(9))
        for i, (x1, y1, x2, y2) in enumerate(out.boxes.tolist()):
            inside = torch.zeros(16, 12, dtype=torch.bool)
            inside[y1:y2, x1:x2] = True
            rest = x_aug[i] if op == "paste" else x[i]
            assert torch.equal(out.x[i][:, ~inside], rest[:, ~inside])
            if inside.any():
                if op == "erasing":
                    assert (out.x[i][:, inside] != x[i][:, inside]).all()
                else:
                    new = {"cutout": lambda: torch.zeros_like(x[i]), "cutmix": lambda: x[out.perm[i]],
                           "paste": lambda: x[i]}[op]()
                    assert torch.equal(out.x[i][:, inside], new[:, inside])


@pytest.mark.parametrize("op", ["cutout", "erasing", "cutmix", "paste"])
def test_selective_boxes_avoid_or_take_a_salient_blob(op):
    """A saliency map that is one bright blob in a corner: a selective cut never touches it, a selective paste
    always does. Every box touching the blob outscores every box missing it; at least 60 % of the candidates
    miss it (so the cut's 0.6-quantile is a missing box's score) and at least 5 % touch it (so the paste's
    0.95-quantile is a touching box's score)."""
    b, h, w = 32, 32, 32
    sal = torch.full((b, h, w), 1e-4)
    sal[:, :5, :5] = 1.0
    x, y = batch(b, h, w)
    keep = KeepAugment(op, 6 if op in ("cutout", "paste") else None, tau=0.95 if op == "paste" else 0.6,
                       num_classes=4 if op == "cutmix" else None)
    params = keep.sample(None, x, y, torch.Generator().manual_seed(3), saliency=sal)
    for x1, y1, x2, y2 in params.boxes.tolist():
        if x2 > x1 and y2 > y1:
            touched = x1 < 5 and y1 < 5
            assert touched if op == "paste" else not touched, (x1, y1, x2, y2)
