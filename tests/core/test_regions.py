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
