import pytest
import torch
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
