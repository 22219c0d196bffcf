import math

import pytest
import torch

from core import (
    candidate_mask,
    region_scores,
    region_threshold,
    sample_beta,
    sample_cutmix_sizes,
    sample_erasing_sizes,
    select_anchors,
    selective_boxes,
)
from core.testing import reference_region_scores, reference_selective_box


def box_scores(s, boxes):
    return torch.stack([s[i, y1:y2, x1:x2].double().sum() for i, (x1, y1, x2, y2) in enumerate(boxes.tolist())])


def test_threshold_is_per_image_quantile():
    s = torch.rand(4, 9, 9)
    scores = region_scores(s, 3)
    thr = region_threshold(scores, 0.6)
    for b in range(4):
        assert torch.allclose(thr[b], torch.quantile(reference_region_scores(s[b], 3, 3).flatten(), 0.6))


@pytest.mark.parametrize("tau", [0.1, 0.6, 0.9])
def test_cut_below_and_paste_above_threshold(tau):
    g = torch.Generator().manual_seed(1)
    s = torch.rand(64, 16, 12, generator=g) ** 4
    thr = region_threshold(region_scores(s, (5, 4)), tau)
    cut = selective_boxes(s, (5, 4), tau, "below", generator=g)
    paste = selective_boxes(s, (5, 4), tau, "above", generator=g)
    assert (box_scores(s, cut) < thr).all()
    assert (box_scores(s, paste) > thr).all()


def chi2_critical(df: int) -> float:
    """Upper 0.1 % point of chi-square(df), Wilson-Hilferty approximation."""
    z = 3.09
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("mode", ["below", "above"])
def test_distribution_matches_rejection_sampling(mode):
    g = torch.Generator().manual_seed(2)
    s = torch.rand(1, 7, 6, generator=g) ** 3
    n = 6000
    boxes = selective_boxes(s.expand(n, -1, -1), (3, 3), 0.6, mode, generator=torch.Generator().manual_seed(3))
    rg = torch.Generator().manual_seed(4)
    ref = [reference_selective_box(s[0], 3, 3, 0.6, mode, rg) for _ in range(n)]
    fast_counts, ref_counts = {}, {}
    for b in boxes.tolist():
        fast_counts[tuple(b)] = fast_counts.get(tuple(b), 0) + 1
    for b in ref:
        ref_counts[b] = ref_counts.get(b, 0) + 1
    assert set(fast_counts) == set(ref_counts)  # identical support
    keys = sorted(ref_counts)
    # two-sample chi-square homogeneity test
    stat = sum((fast_counts[k] - ref_counts[k]) ** 2 / (fast_counts[k] + ref_counts[k]) for k in keys)
    assert stat < chi2_critical(len(keys) - 1)
    # and both are uniform over the distinct anchors (a box may come from several clipped anchors)
    assert max(fast_counts.values()) < 4 * min(fast_counts.values())


def test_uniform_over_candidates():
    s = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(5))
    scores = region_scores(s, 1)
    cand = candidate_mask(scores, 0.6, "below")
    n = 20000
    idx = select_anchors(cand.expand(n, -1, -1), torch.Generator().manual_seed(6))
    counts = torch.bincount(idx, minlength=25).double()
    assert (counts[~cand.flatten()] == 0).all()
    k = int(cand.sum())
    expected = n / k
    stat = ((counts[cand.flatten()] - expected) ** 2 / expected).sum().item()
    assert stat < chi2_critical(k - 1)


def test_constant_saliency_and_extreme_tau_never_empty():
    s = torch.ones(3, 8, 8)
    for tau, mode in [(0.6, "below"), (0.6, "above"), (0.0, "below"), (1.0, "above")]:
        cand = candidate_mask(region_scores(s, 8, "inside"), tau, mode)
        assert cand.flatten(1).any(1).all()
    boxes = selective_boxes(s, (8, 8), 0.6, "below", "inside")
    assert boxes.tolist() == [[0, 0, 8, 8]] * 3
    rand = torch.rand(2, 8, 8)
    assert candidate_mask(region_scores(rand, 2), 0.0, "below").flatten(1).sum(1).tolist() == [1, 1]


def test_determinism_with_generator():
    s = torch.rand(16, 10, 10)
    a = selective_boxes(s, 4, generator=torch.Generator().manual_seed(7))
    b = selective_boxes(s, 4, generator=torch.Generator().manual_seed(7))
    c = selective_boxes(s, 4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tau_out_of_range():
    with pytest.raises(ValueError, match="tau"):
        selective_boxes(torch.rand(1, 4, 4), 2, tau=1.5)


@pytest.mark.parametrize("a,b", [(1.0, 1.0), (0.5, 0.5), (2.0, 5.0)])
def test_beta_moments(a, b):
    x = sample_beta(a, b, (200_000,), torch.Generator().manual_seed(9))
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(x.mean().item() - mean) < 4 * math.sqrt(var / x.numel())
    assert abs(x.var().item() - var) < 0.02 * var + 1e-4
    assert ((x >= 0) & (x <= 1)).all()


def test_erasing_sizes_fit_and_follow_ranges():
    g = torch.Generator().manual_seed(10)
    sizes = sample_erasing_sizes(5000, 32, 24, (0.02, 0.4), (0.3, 1 / 0.3), generator=g)
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    assert ((h < 32) & (w < 24) & (h >= 1) & (w >= 1)).all()
    area = h * w / (32 * 24)
    assert area.min() > 0.01 and area.max() < 0.45
    assert (h / w).min() > 0.2 and (h / w).max() <= 4.0  # rounding of small sides
    p_half = sample_erasing_sizes(5000, 32, 24, p=0.5, generator=g)
    frac = (p_half[:, 0] > 0).double().mean().item()
    assert abs(frac - 0.5) < 0.04


def test_erasing_gives_up_like_the_reference_when_nothing_fits():
    sizes = sample_erasing_sizes(10, 2, 2, (0.9, 1.0), (1.0, 1.0), attempts=5)
    assert (sizes == 0).all()


def test_cutmix_sizes():
    sizes = sample_cutmix_sizes(4000, 32, 16, 1.0, generator=torch.Generator().manual_seed(11))
    assert (sizes[:, 0] <= 32).all() and (sizes[:, 1] <= 16).all()
    # lam ~ U(0,1) => (h/H)^2 ~ 1 - lam ~ U(0,1): mean about 0.5
    assert abs(((sizes[:, 0].double() + 0.5) / 32).pow(2).mean().item() - 0.5) < 0.03
