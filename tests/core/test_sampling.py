import math
import random

import pytest
import torch
from scipy import stats

from core import (
    candidate_mask,
    random_boxes,
    region_scores,
    region_threshold,
    sample_beta,
    sample_cutmix_sizes,
    sample_erasing_sizes,
    sample_gamma,
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


# ------------------------------------------------------------------ distributions of the size samplers
# Each draw is compared with its stated distribution by a goodness-of-fit test at a fixed seed (so the
# outcome is deterministic); the level 1e-4 leaves room for legitimate changes of the sampling code, and
# each test also checks that it would reject a nearby wrong distribution (it has the power to notice).

def chi2_pvalue(counts: torch.Tensor, probs) -> float:
    """Pearson chi-square p-value of integer counts against cell probabilities, cells merged left to right
    until each expects at least 5."""
    n = int(counts.sum())
    obs, exp, acc_o, acc_e = [], [], 0.0, 0.0
    for o, p in zip(counts.tolist(), list(probs)):
        acc_o, acc_e = acc_o + o, acc_e + n * p
        if acc_e >= 5:
            obs.append(acc_o)
            exp.append(acc_e)
            acc_o, acc_e = 0.0, 0.0
    if acc_e or acc_o:
        obs[-1] += acc_o
        exp[-1] += acc_e
    return float(stats.chisquare(obs, exp).pvalue)


@pytest.mark.parametrize("beta", [1.0, 0.4, 3.0])
def test_cutmix_side_follows_beta_lambda(beta):
    """side = floor(dim * sqrt(1 - lam)) with 1 - lam ~ Beta(beta, beta), so P(side = k) is exactly
    F((k + 1)^2 / dim^2) - F(k^2 / dim^2), F the Beta(beta, beta) CDF: chi-square against it, both sides."""
    n, height, width = 20000, 32, 20
    sizes = sample_cutmix_sizes(n, height, width, beta, generator=torch.Generator().manual_seed(12))
    for side, dim in ((sizes[:, 0], height), (sizes[:, 1], width)):
        k = torch.arange(dim + 1, dtype=torch.float64)
        cdf = torch.from_numpy(stats.beta.cdf((k / dim) ** 2, beta, beta))
        probs = (cdf[1:] - cdf[:-1]).tolist()
        counts = torch.bincount(side, minlength=dim + 1)
        assert counts[dim] == 0  # lam = 0 exactly has probability 0
        assert chi2_pvalue(counts[:dim], probs) > 1e-4
        other = 1.0 if beta != 1.0 else 2.0  # the test can tell Beta(beta, beta) from a neighbour
        cdf_other = torch.from_numpy(stats.beta.cdf((k / dim) ** 2, other, other))
        assert chi2_pvalue(counts[:dim], (cdf_other[1:] - cdf_other[:-1]).tolist()) < 1e-6


def test_cutmix_sizes_skip_images_with_probability_1_minus_p():
    sizes = sample_cutmix_sizes(8000, 32, 32, 1.0, p=0.3, generator=torch.Generator().manual_seed(13))
    applied = (sizes > 0).any(1).double().mean().item()
    assert abs(applied - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 8000) + 1 / 1024  # + P(side 0 | applied)


@pytest.mark.parametrize("log_ratio", [False, True])
def test_erasing_area_and_aspect_follow_their_uniform_laws(log_ratio):
    """On a large square image where every draw of area (0.02, 0.25) and aspect (0.5, 2) fits, the area
    fraction h*w/HW ~ U(0.02, 0.25) and the aspect h/w ~ U(0.5, 2) (log-uniform with log_ratio), up to the
    rounding of the sides (< 0.5 %): Kolmogorov-Smirnov tests, and a check that the other law is rejected."""
    n, side = 4000, 1024
    sizes = sample_erasing_sizes(n, side, side, (0.02, 0.25), (0.5, 2.0), log_ratio=log_ratio,
                                 generator=torch.Generator().manual_seed(14))
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    assert (h > 0).all()
    area = (h * w / side**2).numpy()
    assert stats.kstest(area, stats.uniform(0.02, 0.23).cdf).pvalue > 1e-4
    assert stats.kstest(area, stats.uniform(0.05, 0.2).cdf).pvalue < 1e-6
    log_aspect = (h / w).log().numpy()
    log_uniform = stats.uniform(math.log(0.5), math.log(4.0)).cdf
    uniform = stats.uniform(0.5, 1.5).cdf
    fits, wrong = (log_uniform, lambda t: uniform(math.e ** t)) if log_ratio else (
        lambda t: uniform(math.e ** t), log_uniform)
    assert stats.kstest(log_aspect, fits).pvalue > 1e-4
    assert stats.kstest(log_aspect, wrong).pvalue < 1e-6


def reference_erasing_sizes(n, height, width, area, ratio, log_ratio, attempts, seed):
    """Random Erasing's own loop (Zhong et al.; torchvision's with log_ratio), one image at a time."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        for _ in range(attempts):
            target = rng.uniform(*area) * height * width
            if log_ratio:
                r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            else:
                r = rng.uniform(*ratio)
            h, w = round(math.sqrt(target * r)), round(math.sqrt(target / r))
            if h < height and w < width:
                out.append((h, w))
                break
        else:
            out.append((0, 0))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("log_ratio", [False, True])
def test_erasing_sizes_match_the_reference_loop(log_ratio):
    """With the default ranges some draws do not fit (the retry loop conditions the law): two-sample KS
    tests of area and aspect against the per-image reference loop on a non-square image."""
    n, height, width = 4000, 64, 40
    got = sample_erasing_sizes(n, height, width, log_ratio=log_ratio, generator=torch.Generator().manual_seed(15))
    ref = reference_erasing_sizes(n, height, width, (0.02, 0.4), (0.3, 1 / 0.3), log_ratio, 100, 16)
    got = got.double()
    for f in (lambda s: s[:, 0] * s[:, 1], lambda s: (s[:, 0] / s[:, 1]).log(), lambda s: s[:, 0], lambda s: s[:, 1]):
        assert stats.ks_2samp(f(got).numpy(), f(ref).numpy()).pvalue > 1e-4
    other = reference_erasing_sizes(n, height, width, (0.02, 0.4), (0.3, 1 / 0.3), not log_ratio, 100, 17)
    log_aspect = lambda s: (s[:, 0] / s[:, 1]).log()  # noqa: E731
    assert stats.ks_2samp(log_aspect(got).numpy(), log_aspect(other).numpy()).pvalue < 1e-6


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_gamma_follows_its_law(alpha):
    x = sample_gamma(alpha, (60000,), torch.Generator().manual_seed(18))
    assert (x > 0).all()
    assert stats.kstest(x.numpy(), stats.gamma(alpha).cdf).pvalue > 1e-4


@pytest.mark.parametrize("a,b", [(2.0, 5.0), (0.5, 0.5)])
def test_beta_follows_its_law(a, b):
    x = sample_beta(a, b, (60000,), torch.Generator().manual_seed(19))
    assert stats.kstest(x.numpy(), stats.beta(a, b).cdf).pvalue > 1e-4


@pytest.mark.parametrize("placement,size,hw", [("clip", (1, 1), (6, 5)), ("inside", (3, 2), (7, 6))])
def test_random_boxes_are_uniform_over_their_anchors(placement, size, hw):
    """Plain ops: a uniform centre ("clip", size 1: the box is the pixel) or a uniform fitting top-left corner
    ("inside"), boxes of exactly the size: chi-square over the anchors."""
    height, width = hw
    n = 6000
    boxes = random_boxes(n, height, width, size, placement, torch.Generator().manual_seed(20))
    assert ((boxes[:, 3] - boxes[:, 1]) == size[0]).all() and ((boxes[:, 2] - boxes[:, 0]) == size[1]).all()
    rows, cols = height - size[0] + 1, width - size[1] + 1
    assert (boxes[:, 1] < rows).all() and (boxes[:, 0] < cols).all()
    counts = torch.bincount(boxes[:, 1] * cols + boxes[:, 0], minlength=rows * cols)
    assert chi2_pvalue(counts, [1 / (rows * cols)] * (rows * cols)) > 1e-4


def pooled_scores(s: torch.Tensor, h: int, w: int, placement: str, reduce: str) -> torch.Tensor:
    """Scores ``(H, W)`` of one map by pooling (independent of the summed-area table); NaN = no candidate."""
    height, width = s.shape
    x = s[None, None].double()
    if placement == "clip":
        pad = (w // 2, w - w // 2 - 1, h // 2, h - h // 2 - 1)
        sums = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, pad), (h, w), stride=1)[0, 0] * h * w
        area = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(torch.ones_like(x), pad), (h, w), stride=1)[0, 0]
        return sums / (area * h * w) if reduce == "mean" else sums
    inner = torch.nn.functional.avg_pool2d(x, (h, w), stride=1)[0, 0] * (1 if reduce == "mean" else h * w)
    out = torch.full((height, width), float("nan"), dtype=torch.float64)
    out[: height - h + 1, : width - w + 1] = inner
    return out


@pytest.mark.parametrize("placement", ["clip", "inside"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_selective_boxes_per_image_sizes_against_pooled_threshold(placement, reduce):
    g = torch.Generator().manual_seed(21)
    s = torch.rand(24, 12, 10, generator=g) ** 3
    sizes = torch.randint(1, 6, (24, 2), generator=g)
    for tau, mode in ((0.3, "below"), (0.8, "above")):
        boxes = selective_boxes(s, sizes, tau, mode, placement, g, score=reduce)
        for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            h, w = sizes[i].tolist()
            scores = pooled_scores(s[i], h, w, placement, reduce)
            thr = torch.nanquantile(scores.flatten(), tau)
            box = s[i, y1:y2, x1:x2].double()
            got = box.mean() if reduce == "mean" else box.sum()
            if placement == "inside":
                assert (y2 - y1, x2 - x1) == (h, w)
            assert got < thr + 1e-9 if mode == "below" else got > thr - 1e-9
