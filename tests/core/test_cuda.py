"""CUDA checks (skipped without a GPU): the same values as the CPU for every op given the same
generator-independent inputs (maps, sizes, boxes, permutations, made on the CPU and copied over), random
draws on the device that are valid and follow their laws, and no host-device sync."""

import copy

import pytest
import torch
from scipy import stats
from torch import nn

from core import (
    EarlyHead,
    KeepAugment,
    KeepParams,
    anchor_boxes,
    box_area_fraction,
    boxes_to_mask,
    candidate_mask,
    cutmix,
    cutout,
    erase,
    mix_targets,
    paste,
    region_scores,
    region_threshold,
    saliency_map,
    sample_cutmix_sizes,
    sample_erasing_sizes,
    select_anchors,
    selective_boxes,
)

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")


def cpu_inputs(seed: int = 0, b: int = 6, h: int = 13, w: int = 11):
    """Saliency maps, images, per-image sizes, boxes (some clipped, one empty) and a permutation, on the CPU."""
    g = torch.Generator().manual_seed(seed)
    sal = torch.rand(b, h, w, generator=g) ** 3
    sal[0, :4] = 0  # exact zeros: the integer count table
    x = torch.randn(b, 3, h, w, generator=g)
    sizes = torch.randint(1, min(h, w), (b, 2), generator=g)
    x1, y1 = torch.randint(-2, w, (b,), generator=g), torch.randint(-2, h, (b,), generator=g)
    boxes = torch.stack([x1, y1, x1 + sizes[:, 1], y1 + sizes[:, 0]], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    boxes[-1] = torch.tensor([3, 3, 3, 5])  # empty
    perm = torch.randperm(b, generator=g)
    return sal, x, sizes, boxes, perm


def assert_same(cpu: torch.Tensor, dev: torch.Tensor, atol: float = 0.0) -> None:
    assert dev.device.type == "cuda" and dev.dtype == cpu.dtype and dev.shape == cpu.shape
    if atol == 0.0:
        assert torch.equal(dev.cpu(), cpu)
    else:
        assert torch.allclose(dev.cpu().double(), cpu.double(), rtol=0, atol=atol, equal_nan=True)


@pytest.mark.parametrize("placement", ["clip", "inside"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("per_image", [False, True])
def test_region_scores_threshold_and_candidates_match_cpu(placement, reduce, per_image):
    sal, _, sizes, _, _ = cpu_inputs(1)
    size = sizes if per_image else (4, 3)
    scores = region_scores(sal, size, placement, reduce=reduce)
    got = region_scores(sal.to(CUDA), size.to(CUDA) if per_image else size, placement, reduce=reduce)
    assert_same(scores, got, atol=1e-12 * float(sal.sum()))
    assert torch.equal(got.cpu() == 0, scores == 0)  # exact zeros stay exact
    dev_scores = scores.to(CUDA)  # the same scores on both devices from here on
    for tau in (0.0, 0.3, 0.6, 1.0):
        assert_same(region_threshold(scores, tau), region_threshold(dev_scores, tau), atol=1e-12)
        for mode in ("below", "above", "any"):
            assert_same(candidate_mask(scores, tau, mode), candidate_mask(dev_scores, tau, mode))


def test_anchor_boxes_masks_and_area_match_cpu():
    sal, _, sizes, boxes, _ = cpu_inputs(2)
    b, h, w = sal.shape
    anchor = torch.randint(0, h * w, (b,), generator=torch.Generator().manual_seed(3))
    for placement in ("clip", "inside"):
        for size in ((4, 3), sizes):
            dev_size = size.to(CUDA) if isinstance(size, torch.Tensor) else size
            cpu = anchor_boxes(anchor, size, h, w, placement)
            assert_same(cpu, anchor_boxes(anchor.to(CUDA), dev_size, h, w, placement))
    assert_same(boxes_to_mask(boxes, h, w), boxes_to_mask(boxes.to(CUDA), h, w))
    assert_same(box_area_fraction(boxes, h, w), box_area_fraction(boxes.to(CUDA), h, w), atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.uint8])
def test_ops_match_cpu(dtype):
    _, x, _, boxes, perm = cpu_inputs(4)
    x = (x * 40 + 100).clamp(0, 255).to(dtype)
    x_aug = x.flip(3)
    xd, bd, pd = x.to(CUDA), boxes.to(CUDA), perm.to(CUDA)
    assert_same(cutout(x, boxes, 0), cutout(xd, bd, 0))
    assert_same(cutout(x, boxes, (1, 2, 3)), cutout(xd, bd, (1, 2, 3)))
    fill = torch.tensor([7.0, 8.0, 9.0])
    assert_same(cutout(x, boxes, fill), cutout(xd, bd, fill.to(CUDA)))
    assert_same(erase(x, boxes, 5.0), erase(xd, bd, 5.0))
    assert_same(erase(x, boxes, (1, 2, 3)), erase(xd, bd, (1, 2, 3)))
    mean_cpu, mean_dev = erase(x, boxes, "mean"), erase(xd, bd, "mean")
    assert_same(mean_cpu, mean_dev, atol=0.0 if dtype == torch.uint8 else 1e-2 * float(x.float().abs().max()))
    mixed, lam = cutmix(x, boxes, perm)
    mixed_d, lam_d = cutmix(xd, bd, pd)
    assert_same(mixed, mixed_d)
    assert_same(lam, lam_d, atol=1e-7)
    assert_same(paste(x_aug, x, boxes), paste(x_aug.to(CUDA), xd, bd))
    y = torch.arange(len(perm)) % 4
    assert_same(mix_targets(y, perm, lam, 4), mix_targets(y.to(CUDA), pd, lam_d, 4), atol=1e-6)


@pytest.mark.parametrize("fill", ["random", "channel_random"])
def test_random_erasing_fill_on_cuda_is_inside_the_box_only(fill):
    _, x, _, boxes, _ = cpu_inputs(5)
    xd, bd = x.to(CUDA), boxes.to(CUDA)
    out = erase(xd, bd, fill, torch.Generator(device=CUDA).manual_seed(0)).cpu()
    inside = boxes_to_mask(boxes, x.shape[2], x.shape[3]).expand_as(x)
    assert torch.equal(out[~inside], x[~inside]) and (out[inside] != x[inside]).all()


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )


@pytest.fixture
def exact_float32(monkeypatch):
    """No TF32 in convolutions and matmuls, so CUDA float32 values match the CPU's to float32 rounding."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.parametrize("mode,factor,early", [("label", 1.0, False), ("max_logit", 1.0, False),
                                                 ("label", 0.5, False), ("label", 1.0, True)])
def test_saliency_matches_cpu(mode, factor, early, exact_float32):
    model = tiny_net()
    model[1].running_mean.uniform_(-0.1, 0.1)  # non-trivial BatchNorm statistics, used in eval mode
    dev_model = copy.deepcopy(model).to(CUDA)
    head = dev_head = None
    if early:
        head = EarlyHead(model, "3", 5)
        dev_head = EarlyHead(dev_model, "3", 5).to(CUDA)
        dev_head.load_state_dict(head.state_dict())
    _, x, _, _, _ = cpu_inputs(6, h=16, w=12)
    y = torch.arange(len(x)) % 5
    target = y if mode == "label" else None
    sal = saliency_map(model, x, target, mode=mode, low_res_factor=factor, early_head=head)
    got = saliency_map(dev_model, x.to(CUDA), None if target is None else target.to(CUDA), mode=mode,
                       low_res_factor=factor, early_head=dev_head)
    assert_same(sal, got, atol=1e-5 * float(sal.abs().max()))


@pytest.mark.parametrize("op", ["cutout", "erasing", "cutmix", "paste"])
def test_keep_apply_matches_cpu_given_the_boxes(op):
    _, x, _, boxes, perm = cpu_inputs(7)
    y = torch.arange(len(x)) % 4
    keep = KeepAugment(op, 4 if op in ("cutout", "paste") else None, num_classes=4 if op == "cutmix" else None,
                       fill=0.25 if op in ("cutout", "erasing") else None)
    params = KeepParams(boxes, perm if op == "cutmix" else None)
    dev_params = KeepParams(boxes.to(CUDA), perm.to(CUDA) if op == "cutmix" else None)
    x_aug = -x
    cpu = keep.apply(params, x, y, x_aug=x_aug)
    dev = keep.apply(dev_params, x.to(CUDA), y.to(CUDA), x_aug=x_aug.to(CUDA))
    assert_same(cpu.x, dev.x)
    assert_same(cpu.target.float(), dev.target.float(), atol=1e-6)


@pytest.mark.parametrize("mode", ["below", "above"])
@pytest.mark.parametrize("placement", ["clip", "inside"])
def test_selective_boxes_on_cuda_are_candidates_of_the_cpu_scores(mode, placement):
    """The draw uses the CUDA generator (other numbers than the CPU's): every chosen anchor must be one of
    the CPU's candidates, and over many draws each candidate comes up about equally often."""
    g = torch.Generator(device=CUDA).manual_seed(0)
    sal, _, _, _, _ = cpu_inputs(8, b=4, h=9, w=8)
    scores = region_scores(sal, (3, 2), placement)
    cand = candidate_mask(scores, 0.6, mode)
    n = 4000
    rep = cand.repeat(n, 1, 1)
    idx = select_anchors(rep.to(CUDA), g).cpu().view(n, 4)
    for i in range(4):
        counts = torch.bincount(idx[:, i], minlength=9 * 8)
        assert (counts[~cand[i].flatten()] == 0).all()
        k = int(cand[i].sum())
        assert stats.chisquare(counts[cand[i].flatten()].double().numpy()).pvalue > 1e-4 or k == 1
    boxes = selective_boxes(sal.to(CUDA), (3, 2), 0.6, mode, placement, g).cpu()
    thr = region_threshold(scores, 0.6)
    got = torch.stack([sal[i, y1:y2, x1:x2].double().sum() for i, (x1, y1, x2, y2) in enumerate(boxes.tolist())])
    assert (got <= thr + 1e-9).all() if mode == "below" else (got >= thr - 1e-9).all()


def test_size_samplers_on_cuda_follow_their_laws():
    g = torch.Generator(device=CUDA).manual_seed(0)
    n, dim = 20000, 32
    sizes = sample_cutmix_sizes(n, dim, dim, 1.0, generator=g, device=CUDA)
    assert sizes.device.type == "cuda"
    side = sizes[:, 0].cpu().double()
    # side = floor(dim * sqrt(U)): P(side <= k) = ((k + 1) / dim)^2
    k = torch.arange(dim, dtype=torch.float64)
    expected = (((k + 1) / dim) ** 2 - (k / dim) ** 2).numpy() * n
    counts = torch.bincount(side.long(), minlength=dim)[:dim].double().numpy()
    assert stats.chisquare(counts, expected).pvalue > 1e-4
    er = sample_erasing_sizes(4000, 1024, 1024, (0.02, 0.25), (0.5, 2.0), generator=g, device=CUDA).cpu().double()
    area = (er[:, 0] * er[:, 1] / 1024**2).numpy()
    assert stats.kstest(area, stats.uniform(0.02, 0.23).cdf).pvalue > 1e-4
    assert stats.kstest((er[:, 0] / er[:, 1]).numpy(), stats.uniform(0.5, 1.5).cdf).pvalue > 1e-4


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
    # the output is the op applied to the chosen boxes, as on the CPU
    cpu = keep.apply(KeepParams(out.boxes.cpu(), None if out.perm is None else out.perm.cpu()),
                     x.cpu(), y.cpu(), x_aug=x.flip(3).cpu()) if op != "erasing" else None
    if cpu is not None:
        assert torch.equal(out.x.cpu(), cpu.x)
