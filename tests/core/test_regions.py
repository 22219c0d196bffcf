import pytest
import torch

from core import anchor_boxes, region_scores, summed_area_table
from core.testing import brute_force_scores, reference_region_scores


def test_summed_area_table_exact():
    s = torch.rand(2, 5, 7)
    sat = summed_area_table(s)
    assert sat.shape == (2, 6, 8)
    assert torch.allclose(sat[:, 1:, 1:], s.double().cumsum(1).cumsum(2))
    assert (sat[:, 0] == 0).all() and (sat[:, :, 0] == 0).all()


@pytest.mark.parametrize("placement", ["clip", "inside"])
@pytest.mark.parametrize("hw", [(1, 1), (3, 3), (4, 2), (2, 5), (6, 7)])
def test_scores_match_brute_force(placement, hw):
    g = torch.Generator().manual_seed(0)
    s = torch.rand(3, 6, 7, generator=g)
    got = region_scores(s, hw, placement)
    for b in range(3):
        ref = brute_force_scores(s[b], *hw, placement)
        assert torch.equal(torch.isnan(got[b]), torch.isnan(ref))
        assert torch.allclose(got[b].nan_to_num(), ref.nan_to_num(), atol=1e-9)


def test_clip_scores_match_pooling_reference():
    s = torch.rand(2, 12, 9)
    got = region_scores(s, (5, 4))
    for b in range(2):
        assert torch.allclose(got[b], reference_region_scores(s[b], 5, 4), atol=1e-9)


@pytest.mark.parametrize("placement", ["clip", "inside"])
@pytest.mark.parametrize("n,hw", [(32, (16, 16)), (32, (7, 8)), (17, (5, 3)), (9, (9, 9)), (224, (112, 112))])
def test_cpu_prefix_sums_equal_the_pooling_passes(placement, n, hw):
    """On the CPU one region size is scored by prefix-sum differences (O(H W)), elsewhere by two pooling
    passes (few kernels): the same sums bit for bit on a float32 map (float64 sums it exactly), the same
    zero boxes, means within rounding."""
    from core.regions import _pooled_scores, _prefix_scores

    g = torch.Generator().manual_seed(n)
    s = torch.rand(3, n, n, generator=g)
    s[s < 0.4] = 0
    s[0, : n // 2] = 0  # whole zero boxes
    for reduce in ("sum", "mean"):
        pooled, prefix = _pooled_scores(s, *hw, placement, reduce), _prefix_scores(s, *hw, placement, reduce)
        assert torch.equal(pooled.isnan(), prefix.isnan()) and torch.equal(pooled == 0, prefix == 0)
        if reduce == "sum":
            assert torch.equal(pooled.nan_to_num(-1), prefix.nan_to_num(-1))
        else:
            assert torch.allclose(pooled.nan_to_num(), prefix.nan_to_num(), rtol=1e-14, atol=0)


def test_cpu_prefix_sums_keep_a_tiny_box_above_zero_next_to_a_huge_prefix():
    s = torch.zeros(1, 8, 8)
    s[0, 0, 0] = 1e30
    s[0, 3, 0] = 1e-30  # rounds away against the 1e30 above it in a float64 prefix sum
    scores = region_scores(s, 1, "inside")
    assert scores[0, 3, 0] > 0 and (scores[0][s[0] == 0] == 0).all()


def test_per_image_sizes():
    s = torch.rand(3, 8, 8)
    sizes = torch.tensor([[1, 1], [3, 5], [8, 8]])
    got = region_scores(s, sizes, "clip")
    for b, (h, w) in enumerate(sizes.tolist()):
        assert torch.allclose(got[b], brute_force_scores(s[b], h, w), atol=1e-9)


def test_one_pixel_region_is_saliency_and_whole_image_at_centre_is_total():
    s = torch.rand(2, 6, 6)
    assert torch.allclose(region_scores(s, 1), s.double())
    whole = region_scores(s, (6, 6))
    assert torch.allclose(whole[:, 3, 3], s.double().sum((1, 2)))
    inside = region_scores(s, (6, 6), "inside")
    assert torch.allclose(inside[:, 0, 0], s.double().sum((1, 2)))
    assert torch.isnan(inside.flatten(1)[:, 1:]).all()


def test_anchor_boxes_match_reference_boxes():
    anchor = torch.tensor([0, 5 * 7 + 6, 2 * 7 + 3])
    boxes = anchor_boxes(anchor, (4, 3), 6, 7, "clip")
    assert boxes.tolist() == [[0, 0, 2, 2], [5, 3, 7, 6], [2, 0, 5, 4]]
    boxes = anchor_boxes(anchor[:1] + 8, (4, 3), 6, 7, "inside")
    assert boxes.tolist() == [[1, 1, 4, 5]]


def test_errors_name_the_argument():
    s = torch.rand(2, 6, 6)
    with pytest.raises(ValueError, match="saliency"):
        region_scores(torch.rand(6, 6), 3)
    with pytest.raises(ValueError, match="larger than the image"):
        region_scores(s, (7, 2))
    with pytest.raises(ValueError, match="non-finite"):
        region_scores(torch.full((1, 4, 4), float("nan")), 2)
    with pytest.raises(ValueError, match="placement"):
        region_scores(s, 2, "center")
    with pytest.raises(ValueError, match="size"):
        region_scores(s, torch.ones(3, 2, dtype=torch.long))
