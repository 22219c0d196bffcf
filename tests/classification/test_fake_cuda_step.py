"""One whole training step of each trainer on fake CUDA tensors (tests/fake_cuda.py): the classification
trainer on the device-resident loader (keep_cutout with low-res + early head + bf16 saliency, keep_cutmix,
keep_random_erasing, plain cutout) and on the worker loader (keep_autoaugment, and AutoAugment + paste +
KeepCutout sharing one saliency map: the paste needs the PIL pair), the UDA step and the re-ID step,
in bf16 autocast with channels_last. Nothing in a step may wait for the device or copy between host and
device, except a worker loader's non-blocking copy of its pinned batch. (The backward cannot run on
fake CUDA: it is zeros here; its op set is checked on the CPU in tests/core/test_fake_cuda.py and on a
real GPU by the CUDA-marked tests.)"""

import pytest
import torch

from classification.engine import Trainer
from classification.schema import ClsConfig
from classification.uda import SemiConfig, UDATrainer
from core.engine.config import load_config

from ..fake_cuda import assert_sync_free, fake_cuda_environment, move_to_fake_cuda, run_recorded
from .conftest import BASE, ROOT

UDA_BASE = ROOT / "classification" / "configs" / "uda" / "base.yaml"
FAST = ["train.amp=bf16", "model.channels_last=true", "train.deterministic=false"]
FP16 = ["train.amp=fp16", "model.channels_last=true", "train.deterministic=false"]  # a GradScaler, fused optimizers
AMPS = {"bf16": FAST, "fp16": FP16}


def record_second_step(trainer, monkeypatch, step, allow_async_h2d=False):
    """Move the trainer to fake CUDA, step once (lazily built constants), then record the second step."""
    with fake_cuda_environment(monkeypatch) as mode:
        move_to_fake_cuda(trainer, mode)
        trainer.start_checks()
        trainer.begin_epoch()  # the epoch's running sums, on the (fake) device
        step()
        rec = run_recorded(step, allow_async_h2d)
    assert trainer.step == 2
    return rec


@pytest.mark.parametrize("method", ["keep_cutout", "keep_cutmix", "keep_random_erasing", "cutout",
                                    "keep_cutout_fp16", "keep_cutout_fp16_clip"])
def test_classification_step_on_device_loader(method, tiny_overrides, monkeypatch):
    cheap = ["aug.low_res=true", "aug.early_head=true", "aug.saliency_dtype=bfloat16"]
    extra = {"keep_cutout": cheap, "keep_cutout_fp16": [*FP16, "aug.saliency_dtype=float16"],
             "keep_cutout_fp16_clip": [*FP16, "optim.clip_grad_norm=5"]}.get(method, [])
    trainer = Trainer(load_config(ClsConfig, BASE, [*tiny_overrides, *FAST, "data.loader=device",
                                                    f"aug.method={method.split('_fp16')[0]}", *extra]))
    assert trainer.scaler.is_enabled() == ("fp16" in method)
    trainer.loader.set_epoch(0)
    batches = iter(trainer.loader)  # yields from the (moved) device tensors
    rec = record_second_step(trainer, monkeypatch, lambda: trainer.step_batch(next(batches)))
    assert_sync_free(rec, method)
    assert any("_fused_sgd_" in op for op in rec.ops)  # the update ran, fused as on CUDA
    if "fp16" in method:  # the scaler's found-inf flag went to the fused kernel and the scale update, no .item()
        assert rec.ran("_fused_sgd_", torch.float32) and any("_amp_update_scale_" in op for op in rec.ops)
        assert rec.ran("convolution", torch.float16)


@pytest.mark.parametrize("aug", [["aug.method=keep_autoaugment"],
                                 ["aug.method=keep_autoaugment", "aug.region=cutout", "aug.keep_cut=true"]])
def test_classification_paste_step_on_worker_loader(aug, tiny_overrides, monkeypatch):
    trainer = Trainer(load_config(ClsConfig, BASE, [*tiny_overrides, *FAST, *aug]))
    assert not trainer.device_data  # AutoAugment runs per image on PIL: the worker loader
    trainer.loader.set_epoch(0)
    batch = next(iter(trainer.loader))  # real CPU tensors, as a worker's pinned batch
    rec = record_second_step(trainer, monkeypatch, lambda: trainer.step_batch(batch), allow_async_h2d=True)
    assert_sync_free(rec, " ".join(aug))


@pytest.mark.parametrize("amp", sorted(AMPS))
def test_uda_step(amp, monkeypatch, tmp_path):
    overrides = ["data.dataset=sample", "data.root=", "data.batch_size=4", "data.workers=0", "model.kwargs={}",
                 "uda.labels=100", "uda.split=balanced", "uda.unsup_ratio=2", "train.max_steps_per_epoch=2",
                 "train.tensorboard=false",
                 "train.progress=false", f"train.output_dir={tmp_path / 'uda'}", "aug.method=keep_randaugment",
                 "aug.low_res=true", *AMPS[amp]]
    trainer = UDATrainer(load_config(SemiConfig, UDA_BASE, overrides))
    batch = next(iter(trainer.train_batches()))
    assert_sync_free(record_second_step(trainer, monkeypatch, lambda: trainer.step_batch(batch), True), "uda step")


@pytest.mark.parametrize("amp", sorted(AMPS))
def test_reid_step(amp, monkeypatch, tmp_path):
    from reid.engine import ReidTrainer
    from reid.schema import ReidConfig

    from ..reid.test_train import BASE as REID_BASE
    from ..reid.test_train import MINI, test_mini_subset

    if not (MINI / "Market-1501-v15.09.15").is_dir():
        test_mini_subset()
    overrides = [f"data.root={MINI}", "model.pretrained=", "model.depth=18", "data.p=4", "data.k=2",
                 "data.height=64", "data.width=32", "data.workers=0", "train.progress=false", "train.device=cpu",
                 "train.tensorboard=false", f"train.output_dir={tmp_path / 'reid'}", "aug.keep=true",
                 "aug.low_res=true", *AMPS[amp]]
    trainer = ReidTrainer(load_config(ReidConfig, REID_BASE, overrides))
    trainer.sampler.set_epoch(0)
    batch = next(iter(trainer.train_batches()))
    assert_sync_free(record_second_step(trainer, monkeypatch, lambda: trainer.step_batch(batch), True), "re-ID step")


@pytest.mark.parametrize("kind", ["uda", "reid"])
def test_uda_and_reid_backward_has_no_sync_op_on_cpu(kind, tmp_path):
    """The piece fake CUDA cannot run: the backward passes of a whole UDA / re-ID step (saliency pass with
    max-logit / label, consistency or ID + triplet + centre losses), on real CPU tensors, run no op that
    would sync on a GPU."""
    from ..fake_cuda import record_backward_cpu

    if kind == "uda":
        overrides = ["data.dataset=sample", "data.root=", "data.batch_size=4", "data.workers=0", "model.kwargs={}",
                     "uda.labels=100", "uda.split=balanced", "uda.unsup_ratio=2", "train.max_steps_per_epoch=2",
                     "train.tensorboard=false", "train.progress=false", f"train.output_dir={tmp_path / 'uda'}",
                     "aug.method=keep_randaugment", "aug.low_res=true", "uda.threshold=0.05", "uda.tsa=linear_schedule"]
        trainer = UDATrainer(load_config(SemiConfig, UDA_BASE, overrides))
    else:
        from reid.engine import ReidTrainer
        from reid.schema import ReidConfig

        from ..reid.test_train import BASE as REID_BASE
        from ..shared_data import extract_once

        mini = extract_once("market1501-mini.tar.gz", "keepaug-market-mini")
        overrides = [f"data.root={mini}", "model.pretrained=", "model.depth=18", "data.p=4", "data.k=2",
                     "data.height=64", "data.width=32", "data.workers=0", "train.progress=false", "train.device=cpu",
                     "train.tensorboard=false", f"train.output_dir={tmp_path / 'reid'}", "aug.keep=true",
                     "aug.low_res=true"]
        trainer = ReidTrainer(load_config(ReidConfig, REID_BASE, overrides))
    trainer.start_checks()
    trainer.begin_epoch()
    batch = next(iter(trainer.train_batches()))
    rec = record_backward_cpu(lambda: trainer.step_batch(batch))
    assert_sync_free(rec, f"{kind} step backward")
    assert any("convolution_backward" in op for op in rec.ops), "no backward was recorded"
