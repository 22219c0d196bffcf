"""CUDA checks (skipped without a GPU): same results as the CPU, and no host-device sync."""

import pytest
import torch

from core import EarlyHead, KeepAugment, region_scores, selective_boxes

pytestmark = pytest.mark.cuda


def test_selective_boxes_on_cuda_match_properties():
    g = torch.Generator(device="cuda").manual_seed(0)
    s = torch.rand(64, 32, 32, device="cuda", generator=g)
    boxes = selective_boxes(s, 8, 0.6, "below", generator=g)
    scores = region_scores(s, 8)
    thr = torch.nanquantile(scores.flatten(1), 0.6, dim=1)
    got = torch.stack([s[i, y1:y2, x1:x2].double().sum() for i, (x1, y1, x2, y2) in enumerate(boxes.tolist())])
    assert (got < thr).all()


@pytest.mark.parametrize("op", ["cutout", "erasing", "cutmix", "paste"])
def test_no_host_sync(op):
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).cuda()
    head = EarlyHead(model, "layer1", 10).cuda()
    x = torch.randn(16, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    keep = KeepAugment(op, 8 if op in ("cutout", "paste") else None, low_res=True, early_head=head,
                       num_classes=10 if op == "cutmix" else None)
    keep(model, x, y, x_aug=x.flip(3), generator=g)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = keep(model, x, y, x_aug=x.flip(3), generator=g)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.x.shape == x.shape
