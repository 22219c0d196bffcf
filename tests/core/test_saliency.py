import copy

import pytest
import torch
import torchvision
from torch import nn

from core import saliency_map
from core.saliency import eval_mode


def small_net(num_classes=5):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def autograd_reference(model, x, y=None):
    """Independent reference: a deep copy in eval mode, .backward() into x.grad."""
    m = copy.deepcopy(model).eval()
    xr = x.detach().clone().requires_grad_(True)
    logits = m(xr)
    sel = logits.max(1).values if y is None else logits[torch.arange(len(x)), y]
    sel.sum().backward()
    return xr.grad.abs().amax(1)


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [p.requires_grad for p in model.parameters()],
        [m.training for m in model.modules()],
    )


def assert_same(a, b):
    sa, ga, ra, ma = a
    sb, gb, rb, mb = b
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(ga, gb))
    assert ra == rb and ma == mb


def test_equals_autograd_reference_label_and_max_logit():
    model = small_net()
    x, y = torch.randn(6, 3, 12, 10), torch.randint(0, 5, (6,))
    sal = saliency_map(model, x, y)
    assert sal.shape == (6, 12, 10) and sal.dtype == torch.float32 and (sal >= 0).all()
    assert torch.allclose(sal, autograd_reference(model, x, y), atol=1e-6)
    assert torch.allclose(saliency_map(model, x, mode="max_logit"), autograd_reference(model, x), atol=1e-6)


def test_no_trace_on_model():
    model = small_net()
    model.train()
    model[1].eval()  # a mixed-mode model: each flag must come back as it was
    model[0].weight.grad = torch.full_like(model[0].weight, 3.0)
    model[4].weight.requires_grad_(False)
    before = snapshot(model)
    x = torch.randn(4, 3, 8, 8)
    saliency_map(model, x, torch.tensor([0, 1, 2, 3]))
    saliency_map(model, x, mode="max_logit", low_res_factor=0.5)
    assert_same(before, snapshot(model))
    assert model[-1].weight.grad is None


def test_mode_restored_on_exception():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.BatchNorm2d(3), Boom())
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        saliency_map(model, torch.randn(2, 3, 4, 4), mode="max_logit")
    assert all(m.training for m in model.modules())
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            assert not model.training
            raise RuntimeError
    assert model.training


def test_input_not_modified_and_channels_last():
    model = small_net().to(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 8, 8).to(memory_format=torch.channels_last)
    x0 = x.clone()
    y = torch.tensor([1, 2, 3])
    sal = saliency_map(model, x, y)
    assert torch.equal(x, x0) and not x.requires_grad
    assert torch.allclose(sal, autograd_reference(small_net(), x.contiguous(), y), atol=1e-6)


def test_low_resolution():
    model = small_net()
    x, y = torch.randn(2, 3, 16, 12), torch.tensor([0, 4])
    sal = saliency_map(model, x, y, low_res_factor=0.5)
    assert sal.shape == (2, 16, 12) and (sal >= 0).all()
    xs = torch.nn.functional.interpolate(x, size=(8, 6), mode="bicubic", align_corners=False)
    ref = autograd_reference(model, xs, y)
    back = torch.nn.functional.avg_pool2d(sal[:, None], 2)[:, 0]  # bilinear x2 then 2x2 mean ~ original
    assert torch.allclose(back, ref, rtol=0.35, atol=1e-3) or torch.corrcoef(
        torch.stack([back.flatten(), ref.flatten()]))[0, 1] > 0.95
    with pytest.raises(ValueError, match="low_res_factor"):
        saliency_map(model, x, y, low_res_factor=1.5)


def test_autocast_bf16():
    model = small_net()
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sal = saliency_map(model, x, y)
    assert sal.dtype == torch.float32
    ref = autograd_reference(model, x, y)
    assert torch.corrcoef(torch.stack([sal.flatten(), ref.flatten()]))[0, 1] > 0.95


def test_torchvision_and_timm_models():
    timm = pytest.importorskip("timm")
    x = torch.randn(2, 3, 32, 32)
    for model in (torchvision.models.resnet18(num_classes=7), timm.create_model("resnet10t", num_classes=7)):
        y = torch.tensor([3, 6])
        assert torch.allclose(saliency_map(model, x, y), autograd_reference(model, x, y), atol=1e-5)


def test_ddp_wrapped_model_uses_inner_module(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        inner = small_net()
        ddp = nn.parallel.DistributedDataParallel(inner)
        x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
        assert torch.allclose(saliency_map(ddp, x, y), autograd_reference(inner, x, y), atol=1e-6)
        assert all(p.grad is None for p in inner.parameters())
    finally:
        dist.destroy_process_group()


def test_bad_input():
    model = small_net()
    with pytest.raises(ValueError, match="target is required"):
        saliency_map(model, torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="target has batch size"):
        saliency_map(model, torch.randn(2, 3, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="x must have shape"):
        saliency_map(model, torch.randn(3, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="mode"):
        saliency_map(model, torch.randn(2, 3, 8, 8), mode="min_logit")


def test_bf16_pass_ranks_regions_like_float32():
    from core import region_scores, region_threshold

    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=10)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    full = saliency_map(model, x, y)
    fast = saliency_map(model, x, y, autocast_dtype=torch.bfloat16)
    assert fast.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    s_full, s_fast = region_scores(full, 8), region_scores(fast, 8)
    below_full = s_full < region_threshold(s_full, 0.6)[:, None, None]
    below_fast = s_fast < region_threshold(s_fast, 0.6)[:, None, None]
    assert (below_full == below_fast).double().mean() > 0.95


class TupleNet(nn.Module):
    """Returns (logits, features), or a dict with both, like detection / Hugging Face models."""

    def __init__(self, as_dict=False):
        super().__init__()
        self.net, self.as_dict = small_net(), as_dict

    def forward(self, x):
        logits = self.net(x)
        return {"feats": x.mean((2, 3)), "logits": logits} if self.as_dict else (logits, x.mean((2, 3)))


def test_models_returning_tuples_or_dicts_need_output():
    x, y = torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 4])
    ref = autograd_reference(small_net(), x, y)
    with pytest.raises(ValueError, match=r"a tuple of 2, not a \(B, K\) logits tensor: pass output=.*output=0"):
        saliency_map(TupleNet(), x, y)
    with pytest.raises(ValueError, match=r"a dict with keys \['feats', 'logits'\].*output='logits'"):
        saliency_map(TupleNet(as_dict=True), x, y)
    assert torch.allclose(saliency_map(TupleNet(), x, y, output=0), ref, atol=1e-6)
    assert torch.allclose(saliency_map(TupleNet(as_dict=True), x, y, output="logits"), ref, atol=1e-6)
    assert torch.allclose(saliency_map(TupleNet(), x, y, output=lambda out: out[0]), ref, atol=1e-6)
    with pytest.raises(ValueError, match="output='scores' does not select the logits"):
        saliency_map(TupleNet(as_dict=True), x, y, output="scores")
    from core import KeepAugment

    out = KeepAugment("cutout", 4, output="logits")(TupleNet(as_dict=True), x, y)
    assert torch.allclose(out.saliency, ref, atol=1e-6)


def test_soft_targets_point_to_max_logit():
    from core import KeepAugment

    model = small_net()
    x = torch.randn(4, 3, 8, 8)
    soft = torch.softmax(torch.randn(4, 5), 1)
    keep = KeepAugment("cutmix", num_classes=5)
    with pytest.raises(ValueError, match=r"soft \(B, K\) targets.*KeepAugment\(target='max_logit'\)"):
        keep(model, x, soft)
    keep = KeepAugment("cutmix", num_classes=5, target="max_logit")
    out = keep(model, x, soft, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.target, out.lam[:, None] * soft + (1 - out.lam[:, None]) * soft[out.perm])


def test_low_res_on_a_model_with_its_own_size_check():
    class Fixed(nn.Module):  # declares nothing, asserts its size like timm's _assert / torch._assert
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def forward(self, x):
            torch._assert(x.shape[-1] == 8, "Input width doesn't match model (8)")
            return self.net(x)

    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    assert saliency_map(Fixed(), x, y).shape == (2, 8, 8)
    with pytest.raises(RuntimeError, match=r"low_res: .* 4x4 copy of the 8x8 batch.*low_res=False.*dynamic_img_size"):
        saliency_map(Fixed(), x, y, low_res_factor=0.5)


def test_float16_pass_is_scaled_against_underflow():
    """mobilenet_v3_small at init: an input gradient ~1e-11, below float16's smallest value (6e-8)."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    ref = saliency_map(model, x, y)
    assert 0 < ref.max() < 1e-8
    assert saliency_map(model, x, y, autocast_dtype=torch.float16, grad_scale=1.0).max() == 0  # unscaled: all zero
    assert (saliency_map(model, x, y, autocast_dtype=torch.float16).flatten(1).amax(1) > 0).all()  # default 2**12
    top = saliency_map(model, x, y, autocast_dtype=torch.float16, grad_scale=2.0**15)
    assert torch.corrcoef(torch.stack([top.flatten(), ref.flatten()]))[0, 1] > 0.9
    assert torch.allclose(saliency_map(model, x, y, grad_scale=1.0), ref)  # float32 passes ignore it


def overflow_net():
    """Image 1's input gradient (1e3 * 2**12) overflows float16 (max 65504); image 0's (1 * 2**12) does not."""
    lin = nn.Linear(3 * 4 * 4, 2)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.weight[1] *= 1e3
    return nn.Sequential(nn.Flatten(), lin)


def test_running_scale_backs_off_on_overflow_and_grows_on_zero_maps():
    from core.grad_scale import SaliencyScaler

    x, y = torch.randn(2, 3, 4, 4), torch.tensor([0, 1])
    scaler = SaliencyScaler(growth_interval=3)
    sal = saliency_map(overflow_net(), x, y, autocast_dtype=torch.float16, grad_scale=scaler)
    assert sal[0].eq(1.0).all() and sal[1].eq(0).all()  # the overflowed image gets an all-zero map
    assert scaler.scale.item() == 2.0**11 and scaler.tracker.item() == 0
    zero = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    nn.init.zeros_(zero[1].weight)
    saliency_map(zero, x, y, autocast_dtype=torch.float16, grad_scale=scaler)  # all-zero maps: grow at once
    assert scaler.scale.item() == 2.0**12
    plain = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    for expected in (2.0**12, 2.0**12, 2.0**13):  # grows after growth_interval passes without overflow
        saliency_map(plain, x, y, autocast_dtype=torch.float16, grad_scale=scaler)
        assert scaler.scale.item() == expected
    for _ in range(4):
        saliency_map(zero, x, y, autocast_dtype=torch.float16, grad_scale=scaler)
    assert scaler.scale.item() == 2.0**15  # never above: the gradient at the logits is the scale itself


def test_all_zero_maps_are_counted_and_warned_about_once():
    from core import KeepAugment

    zero = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    nn.init.zeros_(zero[2].weight)  # a zero-initialised classifier (torchvision's ViT head): no input gradient
    x, y = torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2])
    keep = KeepAugment("cutout", 4)
    with pytest.warns(UserWarning, match="3 of 3 saliency maps are all zero.*zero_saliency"):
        out = keep(zero, x, y)
    assert out.zero_saliency.dtype == torch.int64 and out.zero_saliency.item() == 3
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keep(zero, x, y).zero_saliency.item() == 3  # once per KeepAugment
        assert keep(small_net(), x, y).zero_saliency.item() == 0
    fp16 = KeepAugment("cutout", 2, saliency_dtype=torch.float16)
    with pytest.warns(UserWarning, match="1 of 2"):
        assert fp16(overflow_net(), torch.randn(2, 3, 4, 4), torch.tensor([0, 1])).zero_saliency.item() == 1
    assert fp16._grad_scales[torch.device("cpu")].scale.item() == 2.0**11
