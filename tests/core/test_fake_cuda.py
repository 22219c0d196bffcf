"""Every KeepAugment configuration on fake CUDA tensors: no host sync, no copy between host and device
(see tests/fake_cuda.py for what fake tensors can and cannot run; the real-GPU check is test_cuda.py)."""

import pytest
import torch
import torchvision

from core import EarlyHead, KeepAugment

from ..fake_cuda import assert_sync_free, fake_cuda_environment, record_backward_cpu, run_recorded

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
        if "bf16" in name:  # the saliency pass really ran under CUDA autocast
            assert any("bfloat16" in op or "_to_copy" in op for op in rec.ops)


def test_recorder_catches_what_it_must(monkeypatch):
    """The checker itself: each known sync pattern is reported (so a clean report means something)."""
    cases = {
        "python value into a device tensor": lambda: torch.empty(3, device="cuda").__setitem__(0, 1.5),
        "torch.tensor on the device": lambda: torch.tensor([1.0, 2.0], device="cuda"),
        ".item()": lambda: torch.ones(2, device="cuda").sum().item(),
        "if tensor": lambda: bool(torch.ones(2, device="cuda").sum() > 0),
        "boolean mask": lambda: torch.ones(4, device="cuda")[torch.ones(4, device="cuda") > 0],
        "device to host": lambda: torch.ones(4, device="cuda").cpu(),
        "blocking host to device": lambda: torch.ones(4).to("cuda"),
    }
    with fake_cuda_environment(monkeypatch):
        for what, fn in cases.items():
            assert run_recorded(fn).violations, what
        assert not run_recorded(lambda: torch.ones(4).to("cuda", non_blocking=True), True).violations
        assert not run_recorded(lambda: torch.empty(3, 2, device="cuda")[:, 0].fill_(2)).violations


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
