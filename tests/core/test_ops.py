import pytest
import torch

from core import box_area_fraction, boxes_to_mask, cutmix, cutout, erase, mix_targets, paste


def loop_mask(boxes, h, w):
    m = torch.zeros(len(boxes), 1, h, w, dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        m[i, 0, y1:y2, x1:x2] = True
    return m


BOXES = torch.tensor([[0, 0, 3, 2], [2, 1, 7, 5], [4, 4, 4, 5], [0, 0, 7, 5]])


def test_mask_matches_loop_and_empty_box():
    m = boxes_to_mask(BOXES, 5, 7)
    assert torch.equal(m, loop_mask(BOXES, 5, 7))
    assert not m[2].any()  # x1 == x2: empty
    assert torch.allclose(box_area_fraction(BOXES, 5, 7), m.float().mean((1, 2, 3)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.uint8])
def test_cutout_fills_box_only(dtype):
    x = (torch.rand(4, 3, 5, 7) * 200 + 1).to(dtype)
    out = cutout(x, BOXES, fill=0)
    m = loop_mask(BOXES, 5, 7).expand_as(x)
    assert out.dtype == dtype and out.shape == x.shape
    assert (out[m] == 0).all() and torch.equal(out[~m], x[~m])
    per_channel = cutout(x, BOXES, fill=(1, 2, 3))
    assert (per_channel[1, :, 1:5, 2:7] == torch.tensor([1, 2, 3], dtype=dtype)[:, None, None]).all()


def test_cutout_does_not_modify_input():
    x = torch.rand(4, 3, 5, 7)
    x0 = x.clone()
    cutout(x, BOXES)
    assert torch.equal(x, x0)


def test_erase_modes():
    x = torch.rand(4, 3, 5, 7) + 10
    m = loop_mask(BOXES, 5, 7).expand_as(x)
    g = torch.Generator().manual_seed(0)
    rnd = erase(x, BOXES, "random", g)
    assert torch.equal(rnd[~m], x[~m]) and (rnd[m] < 9).all()
    assert rnd[1, 0, 1:5, 2:7].std() > 0.3  # per-pixel
    ch = erase(x, BOXES, "channel_random", g)
    assert ch[1, 0, 1:5, 2:7].unique().numel() == 1
    mean = erase(x, BOXES, "mean")
    assert torch.allclose(mean[1, :, 2, 3], x[1].mean((1, 2)))
    const = erase(x, BOXES, (0.5, 0.25, 0.0))
    assert torch.equal(const[3, :, 0, 0], torch.tensor([0.5, 0.25, 0.0]))
    u8 = erase((x * 10).to(torch.uint8), BOXES, "random", g)
    assert u8.dtype == torch.uint8
    with pytest.raises(ValueError, match="fill"):
        erase(x, BOXES, "gaussian")
    with pytest.raises(ValueError, match="fill"):
        erase(x, BOXES, (1.0, 2.0))


def test_cutmix_lambda_is_true_pixel_fraction():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 5, 7, generator=g)
    perm = torch.tensor([1, 2, 3, 0])
    out, lam = cutmix(x, BOXES, perm)
    own = (out == x).all(1).float().mean((1, 2))
    from_partner = (out == x[perm]).all(1).float().mean((1, 2))
    assert torch.allclose(lam, own)
    assert torch.allclose(1 - lam, from_partner)
    assert lam[2] == 1.0 and lam[3] == 0.0


def test_mix_targets():
    y = torch.tensor([0, 1, 2, 1])
    perm = torch.tensor([1, 2, 3, 0])
    lam = torch.tensor([0.25, 0.5, 1.0, 0.0])
    t = mix_targets(y, perm, lam, 3)
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert torch.allclose(t[0], torch.tensor([0.25, 0.75, 0.0]))
    assert torch.allclose(t[3], torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="num_classes"):
        mix_targets(y, perm, lam)


def test_paste():
    x_aug, x = torch.zeros(4, 3, 5, 7), torch.ones(4, 3, 5, 7)
    out = paste(x_aug, x, BOXES)
    assert torch.equal(out, loop_mask(BOXES, 5, 7).expand_as(x).float())
    with pytest.raises(ValueError, match="x_aug and x_clean"):
        paste(x_aug, x[:, :, :4], BOXES)


def test_bad_input():
    x = torch.rand(4, 3, 5, 7)
    with pytest.raises(ValueError, match="x must have shape"):
        cutout(x[0], BOXES)
    with pytest.raises(ValueError, match="boxes"):
        cutout(x, BOXES[:3])
    with pytest.raises(ValueError, match="perm"):
        cutmix(x, BOXES, torch.arange(3))
