"""Every KeepAugment configuration on fake CUDA tensors: no host sync, no copy between host and device
(see tests/fake_cuda.py for what fake tensors can and cannot run; the real-GPU check is test_cuda.py)."""

from typing import NamedTuple

import pytest
import torch
import torchvision
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

from core import EarlyHead, KeepAugment

from ..fake_cuda import PATTERNS, assert_sync_free, fake_cuda_environment, record_backward_cpu, run_recorded

CONFIGS = {
    "cutout": dict(op="cutout", size=8),
    "keep_cutout": dict(op="cutout", size=8, selective=True),
    "keep_cutout_p0.5": dict(op="cutout", size=8, selective=True, p=0.5),
    "keep_cutout_pair_size": dict(op="cutout", size=(6, 10), selective=True),
    "keep_cutout_fill_scalar": dict(op="cutout", size=8, selective=True, fill=0.5),
    "keep_cutout_fill_channels": dict(op="cutout", size=8, selective=True, fill=[0.1, 0.2, 0.3]),
    "keep_cutout_fill_tensor": dict(op="cutout", size=8, selective=True, fill="tensor"),
    "keep_cutout_lowres": dict(op="cutout", size=8, selective=True, low_res=True),
    "keep_cutout_early": dict(op="cutout", size=8, selective=True, early=True),
    "keep_cutout_lowres_early_bf16": dict(op="cutout", size=8, selective=True, low_res=True, early=True,
                                          saliency_dtype=torch.bfloat16),
    "keep_cutout_max_logit": dict(op="cutout", size=8, selective=True, target="max_logit"),
    "keep_cutout_region_mean": dict(op="cutout", size=8, selective=True, region_score="mean"),
    "keep_erasing_region_mean": dict(op="erasing", selective=True, region_score="mean"),
    "erasing": dict(op="erasing", p=0.5),
    "keep_erasing_random": dict(op="erasing", selective=True, p=0.5, fill="random"),
    "keep_erasing_channel_random": dict(op="erasing", selective=True, fill="channel_random"),
    "keep_erasing_mean": dict(op="erasing", selective=True, fill="mean"),
    "keep_erasing_const": dict(op="erasing", selective=True, fill=[0.0, 0.5, 1.0]),
    "cutmix": dict(op="cutmix"),
    "keep_cutmix_p0.5_lowres": dict(op="cutmix", selective=True, p=0.5, low_res=True),
    "keep_cutmix_bf16": dict(op="cutmix", selective=True, saliency_dtype=torch.bfloat16),
    "paste": dict(op="paste", size=8),
    "keep_paste": dict(op="paste", size=8, selective=True),
    "keep_paste_lowres_early_bf16": dict(op="paste", size=8, selective=True, low_res=True, early=True,
                                         saliency_dtype=torch.bfloat16),
}


def build(cfg: dict, model):
    cfg = dict(cfg)
    early = cfg.pop("early", False)
    cfg.setdefault("selective", False)
    if cfg.get("fill") == "tensor":
        cfg["fill"] = torch.tensor([0.1, 0.2, 0.3], device="cuda")
    with torch.device("cuda"):
        head = EarlyHead(model, "layer1", 10) if early else None
    return KeepAugment(cfg.pop("op"), cfg.pop("size", None), early_head=head, num_classes=10, **cfg)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_keep_step_is_sync_free_on_fake_cuda(name, monkeypatch):
    with fake_cuda_environment(monkeypatch):
        with torch.device("cuda"):
            model = torchvision.models.resnet18(num_classes=10)
            x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
            x_aug = torch.randn(8, 3, 32, 32)
        keep = build(CONFIGS[name], model)
        g = torch.Generator().manual_seed(0)
        keep(model, x, y, x_aug=x_aug, generator=g)  # first call: lazily built constants may be made here
        outputs = []
        rec = run_recorded(lambda: outputs.append(keep(model, x, y, x_aug=x_aug, generator=g)))
        assert_sync_free(rec, name)
        out = outputs[0]
        assert out.x.device.type == "cuda" and out.x.shape == x.shape and out.boxes.device.type == "cuda"
        # the saliency pass really ran its convolutions under CUDA autocast in bf16 (and only when asked)
        assert rec.ran("convolution", torch.bfloat16) == ("bf16" in name)
        if "bf16" in name:
            assert not rec.ran("convolution", torch.float32)


def _cuda(*shape):
    return torch.rand(*shape, device="cuda")


def _mask():
    return _cuda(4) > 0.5


def _ctc_cudnn(host):
    log_probs, targets = _cuda(5, 2, 3), torch.ones(2, 3, dtype=torch.int32, device="cuda")
    return torch.ops.aten._cudnn_ctc_loss(log_probs, targets, [5, 5], [3, 3], 0, True, False)


class Case(NamedTuple):
    """``fn(host)`` runs on fake CUDA under a recorder (``host``: a CPU tensor made before the recording, as a
    loader's batch); ``pattern`` is the PATTERNS key it must be reported as (None: it must be clean)."""

    pattern: str | None
    what: str
    fn: object
    allow_async_h2d: bool = False


FLAGGED = [
    Case("sync:_local_scalar_dense", ".item()", lambda h: _cuda(2).sum().item()),
    Case("sync:_local_scalar_dense", "if tensor", lambda h: bool(_cuda(2).sum() > 0)),
    Case("sync:_local_scalar_dense", "int(tensor)", lambda h: int(_cuda(1).sum())),
    Case("sync:_local_scalar_dense", ".tolist()", lambda h: _cuda(3).tolist()),
    Case("sync:_local_scalar_dense", ".is_nonzero()", lambda h: _cuda(1).is_nonzero()),
    Case("sync:equal", "torch.equal", lambda h: torch.equal(_cuda(3), _cuda(3))),
    Case("sync:allclose", "torch.allclose", lambda h: torch.allclose(_cuda(3), _cuda(3))),
    Case("sync:nonzero", "torch.nonzero", lambda h: torch.nonzero(_mask())),
    Case("sync:nonzero", "torch.argwhere", lambda h: torch.argwhere(_mask())),
    Case("sync:nonzero", "torch.where(cond)", lambda h: torch.where(_mask())),
    Case("sync:masked_select", "torch.masked_select", lambda h: torch.masked_select(_cuda(4), _mask())),
    Case("sync:_unique", "torch._unique", lambda h: torch._unique(_cuda(4))),
    Case("sync:_unique2", "torch.unique", lambda h: torch.unique(_cuda(4))),
    Case("sync:unique_dim", "torch.unique(dim=)", lambda h: torch.unique(_cuda(4, 2), dim=0)),
    Case("sync:unique_consecutive", "torch.unique_consecutive", lambda h: torch.unique_consecutive(_cuda(4))),
    Case("sync:bincount", "torch.bincount", lambda h: torch.bincount(torch.randint(0, 3, (5,), device="cuda"))),
    Case("sync:histc", "torch.histc", lambda h: torch.histc(_cuda(5))),
    Case("sync:repeat_interleave", "torch.repeat_interleave",
         lambda h: _cuda(3).repeat_interleave(torch.randint(0, 3, (3,), device="cuda"))),
    Case("sync:_assert_scalar", "aten._assert_scalar", lambda h: torch.ops.aten._assert_scalar(True, "checked")),
    Case("sync:_cudnn_ctc_loss", "aten._cudnn_ctc_loss", _ctc_cudnn),
    Case("sync:_linalg_check_errors", "torch.linalg.inv", lambda h: torch.linalg.inv(_cuda(3, 3))),
    Case("sync:_linalg_check_errors", "torch.linalg.cholesky", lambda h: torch.linalg.cholesky(_cuda(3, 3))),
    Case("sync:multinomial", "torch.multinomial", lambda h: torch.multinomial(_cuda(4), 1)),
    Case("bool-index:index", "t[mask]", lambda h: _cuda(4)[_mask()]),
    Case("bool-index:index_put_", "t[mask] = v", lambda h: _cuda(4).__setitem__(_mask(), 1.0)),
    Case("bool-index:index_put", "torch.index_put", lambda h: torch.index_put(_cuda(4), (_mask(),), _cuda(1))),
    Case("bool-index:_index_put_impl_", "aten._index_put_impl_",
         lambda h: torch.ops.aten._index_put_impl_(_cuda(4), (_mask(),), _cuda(1))),
    Case("bool-index:_unsafe_index", "aten._unsafe_index",
         lambda h: torch.ops.aten._unsafe_index(_cuda(4), (_mask(),))),
    Case("bool-index:_unsafe_index_put", "aten._unsafe_index_put",
         lambda h: torch.ops.aten._unsafe_index_put(_cuda(4), (_mask(),), _cuda(1))),
    Case("copy:to-host", ".cpu()", lambda h: _cuda(4).cpu()),
    Case("copy:to-host", "non-blocking .to('cpu')", lambda h: _cuda(4).to("cpu", non_blocking=True), True),
    Case("copy:to-device", "blocking .to('cuda')", lambda h: torch.ones(4).to("cuda")),
    Case("copy:to-device", "blocking copy of the given batch", lambda h: h.to("cuda")),
    Case("copy:to-device", "torch.tensor(..., device='cuda')", lambda h: torch.tensor([1.0, 2.0], device="cuda")),
    Case("copy:to-device", "non-blocking copy not allowed", lambda h: h.to("cuda", non_blocking=True)),
    Case("copy:unpinned-non-blocking", "non-blocking copy of host memory made in the step",
         lambda h: torch.ones(4).to("cuda", non_blocking=True), True),
    Case("copy:unpinned-non-blocking", "non-blocking copy of a host tensor computed from the batch",
         lambda h: h.float().mul(2).to("cuda", non_blocking=True), True),
    Case("copy_:cross-device", "python value into a device tensor", lambda h: _cuda(3).__setitem__(0, 1.5)),
    Case("copy_:cross-device", "device.copy_(host)", lambda h: _cuda(4).copy_(h)),
    Case("copy_:cross-device", "host.copy_(device)", lambda h: h.clone().copy_(_cuda(4))),
    Case("mixed-devices", "CPU index into a device tensor", lambda h: _cuda(4)[torch.tensor([0, 1])]),
    Case("mixed-devices", "device + host tensor", lambda h: _cuda(4) + h),
    Case("format", "print", lambda h: print(_cuda(3))),
    Case("format", "str", lambda h: str(_cuda(3))),
    Case("format", "repr", lambda h: repr(_cuda(3))),
    Case("format", "f-string", lambda h: f"{_cuda(3)}"),
    Case("format", "f-string with a format spec", lambda h: f"{_cuda(3).sum():.3f}"),
    Case("data-dependent", "output size from the data", lambda h: torch.nonzero(_mask())),
]

CLEAN = [
    Case(None, "fill a slice", lambda h: torch.empty(3, 2, device="cuda")[:, 0].fill_(2)),
    Case(None, "non-blocking copy of the given batch", lambda h: h.to("cuda", non_blocking=True), True),
    Case(None, "non-blocking copy of a view of the given batch", lambda h: h[1:].to("cuda", non_blocking=True), True),
    Case(None, "0-dim CPU scalar operand", lambda h: _cuda(3) + torch.tensor(2.0)),
    Case(None, "torch._assert_async", lambda h: torch._assert_async(_cuda(2).sum() > 0)),
    Case(None, "torch.linalg.inv_ex (info stays on the device)", lambda h: torch.linalg.inv_ex(_cuda(3, 3))),
    Case(None, "Gumbel-max draw instead of multinomial",
         lambda h: (_cuda(4).log() - _cuda(4).log().neg().log()).argmax()),
    Case(None, "printing a host tensor", lambda h: str(h + 1)),
    Case(None, "topk, sort, randperm", lambda h: (_cuda(5).topk(2), _cuda(5).sort(), torch.randperm(5, device="cuda"))),
]


def _recorded(case: Case):
    host = torch.arange(4)  # made before the recording: a loader's batch

    def guarded():  # a run may raise after the recorder has seen the op (no driver, device mismatch)
        try:
            case.fn(host)
        except (DataDependentOutputException, DynamicOutputShapeException):
            raise
        except (RuntimeError, TypeError):
            pass

    return run_recorded(guarded, case.allow_async_h2d)


def test_pattern_table_covers_every_pattern_the_recorder_knows():
    assert {c.pattern for c in FLAGGED} == set(PATTERNS)


@pytest.mark.parametrize("case", FLAGGED, ids=[f"{c.pattern}-{c.what}" for c in FLAGGED])
def test_recorder_reports_each_pattern(case, monkeypatch):
    """The checker itself: each known sync pattern is reported as such (so a clean report means something)."""
    with fake_cuda_environment(monkeypatch):
        rec = _recorded(case)
    assert case.pattern in {v.pattern for v in rec.violations}, (case.what, [str(v) for v in rec.violations])
    assert all(v.pattern in PATTERNS for v in rec.violations)


@pytest.mark.parametrize("case", CLEAN, ids=[c.what for c in CLEAN])
def test_recorder_passes_sync_free_code(case, monkeypatch):
    with fake_cuda_environment(monkeypatch):
        assert_sync_free(_recorded(case), case.what)


def test_recorder_keeps_input_dtypes_and_restores_formatting(monkeypatch):
    repr_before, format_before = torch._tensor_str._str, torch.Tensor.__format__
    with fake_cuda_environment(monkeypatch):
        w, x = _cuda(2, 3, 3, 3), _cuda(1, 3, 4, 4)

        def conv():
            with torch.autocast("cuda", torch.bfloat16):
                torch.nn.functional.conv2d(x, w)

        rec = run_recorded(conv)
    assert len(rec.dtypes) == len(rec.ops)
    assert rec.ran("convolution", torch.bfloat16) and not rec.ran("convolution", torch.float32)
    assert torch._tensor_str._str is repr_before and torch.Tensor.__format__ is format_before


def test_saliency_backward_has_no_sync_op_on_cpu():
    """The piece fake CUDA cannot run (autograd): the backward of the saliency pass and of a training
    loss, on real CPU tensors, runs no op that would sync on a GPU."""
    model = torchvision.models.resnet18(num_classes=10)
    head = EarlyHead(model, "layer1", 10)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    for keep in (KeepAugment("cutout", 8, low_res=True, early_head=head), KeepAugment("cutmix", num_classes=10)):
        def step():
            out = keep(model, x, y, generator=torch.Generator().manual_seed(0))
            loss = torch.nn.functional.cross_entropy(model(out.x), out.target) + head.loss(out.target)
            loss.backward()
        assert_sync_free(record_backward_cpu(step), repr(keep))
