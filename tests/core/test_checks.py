"""Input checks of the public `core` entry points (each error is a ValueError naming the argument),
sync-free construction of fills and sizes, dtype/inference-mode handling of the saliency pass, and
exact ties of region scores."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from core import (
    KeepAugment,
    anchor_boxes,
    candidate_mask,
    cutout,
    random_boxes,
    region_scores,
    region_threshold,
    saliency_map,
    selective_boxes,
    summed_area_table,
)
from core.ops import fill_tensor
from core.sizes import as_sizes
from core.testing import brute_force_scores


def tiny_net(k=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, k))


def batch(b=4, h=16, w=12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 3, h, w, generator=g), torch.randint(0, 4, (b,), generator=g)


def chi2_critical(df: int) -> float:
    """Upper 0.1 % point of chi-square(df), Wilson-Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3


class OpLog(TorchDispatchMode):
    """Records the aten ops run inside the context."""

    def __enter__(self):
        self.ops = set()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


# Ops that copy host values to the device (a blocking copy on CUDA) or read device values to the host.
HOST_COPIES = {"copy_", "lift_fresh", "lift_fresh_copy", "index_put_", "_local_scalar_dense"}


# --- sync-free construction of fills and sizes -------------------------------------------------------

@pytest.mark.parametrize("fill", [0.5, np.float32(0.5), (1, 2, 3), [0.1, np.float64(0.2), 3]])
def test_fill_is_built_with_fill_kernels_only(fill):
    x = torch.rand(2, 3, 4, 4, dtype=torch.bfloat16)
    with OpLog() as log:
        t = fill_tensor(fill, x)
    assert "fill_" in log.ops and not log.ops & HOST_COPIES
    expected = torch.tensor(np.broadcast_to(np.asarray(fill, dtype=np.float32), (1,) if np.ndim(fill) == 0 else (3,)))
    assert t.dtype == x.dtype and t.shape in ((1, 1, 1, 1), (1, 3, 1, 1))
    assert torch.equal(t.flatten(), expected.to(x.dtype))


@pytest.mark.parametrize("fill", ["zero", True, [], (1.0, "2", 3.0), None, (1.0, 2.0)])
def test_bad_fill_names_fill(fill):
    with pytest.raises(ValueError, match="fill"):
        cutout(torch.rand(2, 3, 4, 4), torch.tensor([[0, 0, 2, 2]] * 2), fill)


def test_static_sizes_are_filled_not_copied():
    with OpLog() as log:
        sizes = as_sizes((3, np.int64(5)), 4, torch.device("cpu"))
    assert not log.ops & HOST_COPIES
    assert sizes.tolist() == [[3, 5]] * 4 and sizes.dtype == torch.long


def test_keep_builds_the_fill_once_per_device_and_dtype():
    x, y = batch()
    keep = KeepAugment("cutout", 4, selective=False, fill=(0.1, 0.2, 0.3))
    first = keep._fill_for(x, 0.0)
    assert keep._fill_for(x, 0.0) is first
    assert keep._fill_for(x.half(), 0.0).dtype == torch.float16 and keep._fill_for(x, 0.0) is first
    params = keep.sample(None, x, y, generator=torch.Generator().manual_seed(0))
    with OpLog() as log:
        out = keep.apply(params, x, y)
    assert not log.ops & {"fill_", "empty", "_to_copy"}  # the cached fill is reused as is, not rebuilt
    x1, y1, x2, y2 = out.boxes[0].tolist()
    assert torch.allclose(out.x[0, :, y1, x1], torch.tensor([0.1, 0.2, 0.3]))
    keep.fill = 1.0  # a new fill empties the cache
    assert keep._fill_for(x, 0.0).flatten().tolist() == [1.0]


# --- region sizes --------------------------------------------------------------------------------------

def test_static_size_larger_than_image_is_rejected_also_with_p_below_one():
    model = tiny_net()
    x, y = batch()
    for selective in (True, False):
        with pytest.raises(ValueError, match="size"):
            KeepAugment("cutout", 20, p=0.5, selective=selective)(model, x, y)
        with pytest.raises(ValueError, match="size"):
            KeepAugment("paste", (4, 13), p=0.5, selective=selective)(model, x, y, x_aug=x)


@pytest.mark.parametrize("bad", [[[3, 3], [-1, 2]], [[3, 3], [9, 2]], [[3, 9], [2, 2]]])
def test_per_image_size_tensor_values_are_checked(bad):
    s = torch.rand(2, 8, 8)
    sizes = torch.tensor(bad)
    with pytest.raises(ValueError, match="size"):
        region_scores(s, sizes)
    with pytest.raises(ValueError, match="size"):
        selective_boxes(s, sizes)
    with pytest.raises(ValueError, match="size"):
        random_boxes(2, 8, 8, sizes)


def test_per_image_size_tensor_dtype_and_shape():
    s = torch.rand(2, 8, 8)
    for bad in (torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 3, dtype=torch.long)):
        with pytest.raises(ValueError, match="size"):
            region_scores(s, bad)


def test_numpy_integer_sizes_are_integers():
    s = torch.rand(2, 8, 8)
    assert torch.equal(region_scores(s, np.int64(3)), region_scores(s, 3))
    assert torch.equal(region_scores(s, (np.int32(3), 2)), region_scores(s, (3, 2)))
    g = torch.Generator
    assert torch.equal(selective_boxes(s, np.int64(3), generator=g().manual_seed(0)),
                       selective_boxes(s, 3, generator=g().manual_seed(0)))
    anchor = torch.tensor([9, 20])
    assert torch.equal(anchor_boxes(anchor, np.int64(3), 8, 8), anchor_boxes(anchor, 3, 8, 8))
    keep = KeepAugment("cutout", np.int64(4), selective=False)
    assert keep.size == 4 and type(keep.size) is int


@pytest.mark.parametrize("size", [16.0, 4.0, (4, 4.0), "16", "4", True, (True, 4), None, (4,), (4, 4, 4)])
def test_non_integer_sizes_are_rejected(size):
    s = torch.rand(2, 8, 8)
    for call in (lambda: region_scores(s, size), lambda: selective_boxes(s, size),
                 lambda: random_boxes(2, 8, 8, size), lambda: anchor_boxes(torch.tensor([0, 1]), size, 8, 8)):
        with pytest.raises(ValueError, match="size"):
            call()
    if size is not None:  # None is KeepAugment's default size
        with pytest.raises(ValueError, match="size"):
            KeepAugment("cutout", size)


def test_float_size_message_says_integer():
    with pytest.raises(ValueError, match="size must be an integer, got 16.0"):
        KeepAugment("cutout", 16.0)


# --- empty inputs --------------------------------------------------------------------------------------

def test_empty_batch_is_rejected_by_every_entry_point():
    model = tiny_net()
    for shape in ((0, 8, 8), (2, 0, 8), (2, 8, 0)):
        with pytest.raises(ValueError, match="saliency must be non-empty"):
            region_scores(torch.rand(shape), 3 if 0 not in shape[1:] else 0)
        with pytest.raises(ValueError, match="saliency must be non-empty"):
            selective_boxes(torch.rand(shape), 0)
    with pytest.raises(ValueError, match="scores must be non-empty"):
        region_threshold(torch.rand(0, 8, 8, dtype=torch.float64), 0.6)
    x, y = torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="x must be non-empty"):
        saliency_map(model, x, y)
    for selective in (True, False):
        with pytest.raises(ValueError, match="x must be non-empty"):
            KeepAugment("cutout", 4, selective=selective)(model, x, y)


# --- tau -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [np.float32(0.6), np.float64(0.6), np.int64(1), 0, 1, 0.25])
def test_numpy_and_python_real_tau_accepted(tau):
    s = torch.rand(2, 8, 8)
    keep = KeepAugment("cutout", 3, tau=tau)
    assert type(keep.tau) is float and keep.tau == float(tau)
    assert selective_boxes(s, 3, tau).shape == (2, 4)
    assert region_threshold(region_scores(s, 3), tau).shape == (2,)


@pytest.mark.parametrize("tau", [True, False, "0.6", float("nan"), np.float32("nan"), 1.5, -0.1, None,
                                 torch.tensor(0.6)])
def test_bad_tau_rejected(tau):
    s = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="tau"):
        KeepAugment("cutout", 3, tau=tau)
    with pytest.raises(ValueError, match="tau"):
        selective_boxes(s, 3, tau)


# --- KeepAugment.__call__ argument order ---------------------------------------------------------------

def test_call_checks_x_before_y():
    model = tiny_net()
    x, y = batch()
    keep = KeepAugment("cutout", 4)
    with pytest.raises(ValueError, match="x must have shape"):
        keep(model, x[0], y)
    with pytest.raises(ValueError, match="x must have shape"):
        keep(model, x[0], y.tolist())
    with pytest.raises(ValueError, match="x must be a torch.Tensor"):
        keep(model, x.tolist(), y)


@pytest.mark.parametrize("y", [[0, 1, 2, 3], (0, 1, 2, 3), np.zeros(4, dtype=np.int64), torch.tensor(1)])
def test_non_tensor_y_names_y(y):
    model = tiny_net()
    x, _ = batch()
    for keep in (KeepAugment("cutout", 4), KeepAugment("cutmix", num_classes=4)):
        with pytest.raises(ValueError, match="y must be a torch.Tensor"):
            keep(model, x, y)
    with pytest.raises(ValueError, match="target must be a torch.Tensor"):
        saliency_map(model, x, y)


def test_wrong_batch_names_y_and_x_aug():
    model = tiny_net()
    x, y = batch()
    with pytest.raises(ValueError, match="y has batch size 3, expected 4"):
        KeepAugment("cutout", 4)(model, x, y[:3])
    with pytest.raises(ValueError, match="x_aug has batch size 3, expected 4"):
        KeepAugment("paste", 4)(model, x, y, x_aug=x[:3])
    with pytest.raises(ValueError, match="x_aug must be a torch.Tensor"):
        KeepAugment("paste", 4)(model, x, y, x_aug=x.tolist())


# --- saliency pass: inference mode, inference tensors, low-precision models ----------------------------

def test_inference_mode_is_a_clear_error():
    model = tiny_net()
    x, y = batch()
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"outside torch\.inference_mode\(\)"):
            saliency_map(model, x, y)
        with pytest.raises(RuntimeError, match="needs autograd"):
            KeepAugment("cutout", 4)(model, x, y)
        plain = KeepAugment("cutout", 4, selective=False)(None, x, y)  # no saliency pass: fine
    assert plain.x.shape == x.shape
    with torch.no_grad():
        assert torch.equal(saliency_map(model, x, y), saliency_map(model, x, y))


def test_inference_tensors_are_accepted_outside_inference_mode():
    model = tiny_net()
    x, y = batch()
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
    assert xi.is_inference() and yi.is_inference()
    assert torch.equal(saliency_map(model, xi, yi), saliency_map(model, x, y))
    assert torch.equal(saliency_map(model, xi, mode="max_logit", low_res_factor=0.5),
                       saliency_map(model, x, mode="max_logit", low_res_factor=0.5))
    out = KeepAugment("cutout", 4)(model, xi, yi, generator=torch.Generator().manual_seed(0))
    ref = KeepAugment("cutout", 4)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.x, ref.x)


def test_bf16_model_saliency_follows_the_parameter_dtype():
    model = tiny_net()
    x, y = batch()
    ref = saliency_map(model, x, y)
    model_bf16 = tiny_net().to(torch.bfloat16)
    for xin in (x, x.bfloat16()):
        sal = saliency_map(model_bf16, xin, y)
        assert sal.dtype == torch.float32 and sal.shape == (4, 16, 12) and (sal >= 0).all()
        assert torch.corrcoef(torch.stack([sal.flatten(), ref.flatten()]))[0, 1] > 0.9
    assert all(p.dtype == torch.bfloat16 and p.grad is None for p in model_bf16.parameters())


@pytest.mark.parametrize("xdtype", [torch.float32, torch.bfloat16])
def test_bf16_model_keep_cutout_end_to_end(xdtype):
    model = tiny_net().to(torch.bfloat16)
    x, y = batch()
    x = x.to(xdtype)
    out = KeepAugment("cutout", 8)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert out.x.dtype == xdtype and out.saliency.dtype == torch.float32
    thr = region_threshold(region_scores(out.saliency, 8), 0.6)
    got = torch.stack([out.saliency[i, y1:y2, x1:x2].double().sum() for i, (x1, y1, x2, y2)
                       in enumerate(out.boxes.tolist())])
    assert (got < thr).all()


def test_parameterless_model_computes_in_float32():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(x.dtype)
            return x.mean((2, 3))

    sal = saliency_map(Probe(), torch.rand(2, 3, 4, 4, dtype=torch.bfloat16), torch.tensor([0, 1]))
    assert seen == [torch.float32] and sal.dtype == torch.float32


# --- exact ties of region scores -----------------------------------------------------------------------

def zeros_next_to_huge(b=4, n=16, seed=0):
    """Zero maps with a top row of values up to 1e10 and a left column of values up to 1: float64
    summed-area-table differences leave many all-zero boxes at about +-1e-6 instead of 0."""
    g = torch.Generator().manual_seed(seed)
    s = torch.zeros(b, n, n)
    s[:, 0, :] = torch.rand(b, n, generator=g) * 1e10
    s[:, :, 0] = torch.rand(b, n, generator=g)
    return s


def test_all_zero_boxes_score_exactly_zero_next_to_huge_values():
    s = zeros_next_to_huge()
    sat = summed_area_table(s)  # the map does defeat plain table differences:
    raw = sat[:, 3:, 3:] - sat[:, :-3, 3:] - sat[:, 3:, :-3] + sat[:, :-3, :-3]
    assert (raw[:, 1:, 1:] != 0).any() and (raw[:, 1:, 1:] < 0).any()
    for placement in ("clip", "inside"):
        scores = region_scores(s, 3, placement)
        for b in range(s.shape[0]):
            zero = brute_force_scores((s[b] != 0).float(), 3, 3, placement) == 0
            assert (scores[b][zero] == 0).all()  # exactly tied
            assert (scores[b][~zero].nan_to_num(1.0) > 0).all()
    sizes = torch.tensor([[3, 3], [2, 4], [0, 0], [16, 16]])
    scores = region_scores(s, sizes)
    assert (scores[2] == 0).all()  # empty boxes
    assert (scores >= 0).all()
    for b, (h, w) in enumerate(sizes.tolist()):
        zero = brute_force_scores((s[b] != 0).float(), h, w) == 0
        assert (scores[b][zero] == 0).all()


def test_selective_cut_draws_uniformly_among_the_all_zero_boxes():
    s = zeros_next_to_huge(1)
    scores = region_scores(s, 3)
    zero = brute_force_scores((s[0] != 0).float(), 3, 3) == 0
    assert zero.double().mean() > 0.6  # so the 0.6-quantile is 0 and exactly the all-zero boxes qualify
    assert torch.equal(candidate_mask(scores, 0.6, "below")[0], zero)
    n = 20000
    boxes = selective_boxes(s.expand(n, -1, -1), 3, 0.6, "below", generator=torch.Generator().manual_seed(1))
    assert all(s[0, y1:y2, x1:x2].eq(0).all() for x1, y1, x2, y2 in boxes.unique(dim=0).tolist())
    _, counts = boxes.unique(dim=0, return_counts=True)
    k = int(zero.sum())
    assert counts.numel() == k  # every all-zero box is drawn (one box per anchor at this size)
    expected = n / k
    assert ((counts.double() - expected) ** 2 / expected).sum().item() < chi2_critical(k - 1)


def test_negative_saliency_is_rejected():
    with pytest.raises(ValueError, match="saliency must be non-negative"):
        region_scores(-torch.rand(2, 8, 8), 3)
    assert region_scores(-torch.rand(2, 8, 8), 3, check=False).shape == (2, 8, 8)


# --- CUDA: the value checks stay asynchronous -----------------------------------------------------------

@pytest.mark.cuda
def test_cuda_size_tensor_and_saliency_checks_do_not_sync():
    s = torch.rand(8, 16, 16, device="cuda")
    sizes = torch.randint(0, 17, (8, 2), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    selective_boxes(s, sizes, np.float32(0.6), generator=g)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        boxes = selective_boxes(s, sizes, np.float32(0.6), generator=g)
        fill = fill_tensor((0.1, 0.2, 0.3), torch.empty(1, 3, 1, 1, device="cuda"))
        static = as_sizes((3, np.int64(5)), 8, s.device)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert boxes.shape == (8, 4) and static.tolist() == [[3, 5]] * 8
    assert torch.allclose(fill.flatten().cpu(), torch.tensor([0.1, 0.2, 0.3]))
