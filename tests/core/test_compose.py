"""KeepPipeline (paste, then a region op) and area-normalised region scores."""

import pytest
import torch
from torch import nn

from core import KeepAugment, KeepPipeline, region_scores, selective_boxes
from core.testing import reference_box


class CountingNet(nn.Module):
    """A tiny convnet whose forward passes are counted (one per saliency pass)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4, 5))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.body(x)


def inside(boxes, h, w):
    """(B, H, W) bool masks of (x1, y1, x2, y2) boxes."""
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    return (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)


def test_paste_then_cut_in_order_with_one_saliency_pass():
    net = CountingNet()
    x = torch.rand(6, 3, 16, 16) + 1.0  # clean: values in [1, 2)
    x_aug = -torch.rand(6, 3, 16, 16) - 1.0  # its "AutoAugment": values in (-2, -1]
    y = torch.randint(0, 5, (6,))
    keep = KeepPipeline(KeepAugment("paste", 6), KeepAugment("cutout", 5, fill=0.0))
    out = keep(net, x, y, x_aug=x_aug, generator=torch.Generator().manual_seed(1))
    assert net.calls == 1  # the saliency of the clean batch, shared by the paste and the cut
    cut, pasted = inside(out.boxes, 16, 16), inside(out.paste_boxes, 16, 16)
    for b in range(6):
        for c in range(3):
            o = out.x[b, c]
            assert (o[cut[b]] == 0).all()  # the region op ran last: its fill wins over the paste
            assert torch.equal(o[pasted[b] & ~cut[b]], x[b, c][pasted[b] & ~cut[b]])  # clean region pasted back
            assert torch.equal(o[~pasted[b] & ~cut[b]], x_aug[b, c][~pasted[b] & ~cut[b]])  # the policy's image
    assert torch.equal(out.target, y) and out.saliency.shape == (6, 16, 16)


def test_pipeline_steps_equal_the_single_steps_given_the_same_saliency():
    net = CountingNet()
    x, x_aug, y = torch.rand(4, 3, 12, 12), torch.rand(4, 3, 12, 12), torch.randint(0, 5, (4,))
    paste, cut = KeepAugment("paste", 4), KeepAugment("cutmix", num_classes=5)
    out = KeepPipeline(paste, cut)(net, x, y, x_aug=x_aug, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    sal = paste.saliency(net, x, y)
    p = paste.sample(None, x, y, g, saliency=sal)
    step1 = paste.apply(p, x, y, x_aug)
    c = cut.sample(None, step1.x, y, g, saliency=sal)
    step2 = cut.apply(c, step1.x, y)
    assert torch.equal(out.x, step2.x) and torch.equal(out.target, step2.target)
    assert torch.equal(out.boxes, step2.boxes) and torch.equal(out.paste_boxes, step1.boxes)


def test_plain_region_op_after_paste_and_region_only_pipeline():
    net = CountingNet()
    x, x_aug, y = torch.rand(3, 3, 10, 10), torch.rand(3, 3, 10, 10), torch.randint(0, 5, (3,))
    out = KeepPipeline(KeepAugment("paste", 4), KeepAugment("cutout", 4, selective=False))(
        net, x, y, x_aug=x_aug, generator=torch.Generator().manual_seed(0))
    assert net.calls == 1 and out.paste_boxes is not None
    only_cut = KeepPipeline(None, KeepAugment("cutout", 4))(net, x, y, generator=torch.Generator().manual_seed(0))
    single = KeepAugment("cutout", 4)(net, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(only_cut.x, single.x) and only_cut.paste_boxes is None


def test_pipeline_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="needs a paste step, a region step or both"):
        KeepPipeline(None, None)
    with pytest.raises(ValueError, match="selective KeepAugment"):
        KeepPipeline(KeepAugment("cutout", 4), None)
    with pytest.raises(ValueError, match="not paste"):
        KeepPipeline(KeepAugment("paste", 4), KeepAugment("paste", 4))
    keep = KeepAugment("cutout", 4)
    with pytest.raises(ValueError, match=r"saliency must be \(B, H, W\) = \(2, 8, 8\)"):
        keep.sample(None, torch.rand(2, 3, 8, 8), saliency=torch.rand(2, 4, 4))


@pytest.mark.parametrize("placement", ["clip", "inside"])
def test_mean_scores_are_sums_over_the_clipped_area(placement):
    torch.manual_seed(0)
    sal = torch.rand(2, 9, 11)
    sums = region_scores(sal, (4, 3), placement)
    means = region_scores(sal, (4, 3), placement, reduce="mean")
    for i in range(9):
        for j in range(11):
            if placement == "clip":
                x1, y1, x2, y2 = reference_box(i, j, 4, 3, 9, 11)
            else:
                x1, y1, x2, y2 = j, i, min(j + 3, 11), min(i + 4, 9)
            area = (x2 - x1) * (y2 - y1)
            if placement == "inside" and (i + 4 > 9 or j + 3 > 11):
                assert means[:, i, j].isnan().all()
                continue
            assert torch.allclose(means[:, i, j], sums[:, i, j] / area, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="reduce must be one of"):
        region_scores(sal, 3, reduce="max")
    with pytest.raises(ValueError, match="region_score must be one of"):
        KeepAugment("cutout", 4, region_score="max")


def test_sum_scores_favour_small_border_boxes_and_mean_does_not():
    """On a uniform map the sum is lowest for boxes clipped by the border, so a selective cut with the sum
    cuts only clipped (smaller) boxes; with the mean every box ties and the cut area is Cutout's."""
    sal = torch.ones(4000, 32, 32)
    g = torch.Generator().manual_seed(0)
    area, every = {}, {}
    for score in ("sum", "mean"):
        boxes = selective_boxes(sal, 16, 0.6, "below", "clip", g, score=score)
        every[score] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        area[score] = every[score].double().mean().item()
    uniform = torch.tensor([(min(c + 8, 32) - max(c - 8, 0)) for c in range(32)], dtype=torch.float64).mean() ** 2
    assert (every["sum"] < 256).all() and area["sum"] < 0.85 * uniform.item()  # 158.6 px vs Cutout's 196
    assert (every["mean"] == 256).any()
    assert abs(area["mean"] - uniform.item()) / uniform.item() < 0.02  # uniform centres: Cutout's mean area


def test_pipeline_pastes_above_and_cuts_below_the_shared_saliency_threshold():
    """With one saliency map for both steps, the paste's boxes score >= its tau-quantile and the cut's boxes
    <= it (scores by zero-padded pooling, independent of the summed-area table)."""
    from core.testing import reference_region_scores

    net = CountingNet()
    g = torch.Generator().manual_seed(5)
    x, x_aug, y = torch.rand(12, 3, 16, 16, generator=g), torch.rand(12, 3, 16, 16, generator=g), torch.arange(12) % 5
    keep = KeepPipeline(KeepAugment("paste", 6, tau=0.8), KeepAugment("cutout", 5, tau=0.4))
    out = keep(net, x, y, x_aug=x_aug, generator=g)
    for i in range(12):
        for boxes, size, tau, above in ((out.paste_boxes, 6, 0.8, True), (out.boxes, 5, 0.4, False)):
            thr = torch.quantile(reference_region_scores(out.saliency[i], size, size).flatten(), tau)
            x1, y1, x2, y2 = boxes[i].tolist()
            score = out.saliency[i, y1:y2, x1:x2].double().sum()
            assert score >= thr - 1e-9 if above else score <= thr + 1e-9
