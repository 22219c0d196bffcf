"""Kernel budget of a whole training step (issue #18): KeepCutout with low-resolution saliency and the early
head against plain Cutout, the classification trainer's ``step_batch`` on the device-resident loader.

Device kernels are counted as in tests/core/test_kernel_budget.py: the forward, the selection, the loss and
the (fused, as on CUDA) optimizer on fake CUDA (tests/fake_cuda.py), plus the backward passes (the saliency's
input gradient and the loss's) on the CPU, where autograd runs for real (which kernels a backward launches
does not depend on the device)."""

import pytest

from classification.engine import Trainer
from classification.schema import ClsConfig
from core.engine.config import load_config

from ..fake_cuda import assert_sync_free, record_backward_cpu
from .conftest import BASE
from .test_fake_cuda_step import record_second_step

# KeepCutout low-res + early head over Cutout, in kernels per step: 1.468 before issue #18 (235 / 345 kernels),
# 1.308 after (214 / 280), measured 2026-12-01 (CIFAR ResNet-18, fp32, the fused SGD of a CUDA trainer); 1.311
# (212 / 278) once the device loader's crop-flip took two kernels fewer (both steps fetch a batch). The issue's
# goal is 1.25: see docs/benchmarks.md#kernel-budgets for what the rest is. KEEP_EXTRA bounds what Keep adds,
# which a cheaper shared part (a smaller denominator) cannot hide.
STEP_RATIO = 1.312
KEEP_EXTRA = 66


def step_kernels(overrides: list[str]) -> list[str]:
    """The kernels of one training step (the second: constants are built once)."""
    def build():
        trainer = Trainer(load_config(ClsConfig, BASE, [*overrides, "data.loader=device"]))
        trainer.loader.set_epoch(0)
        return trainer, iter(trainer.loader)

    trainer, batches = build()
    with pytest.MonkeyPatch.context() as patch:  # the autograd stand-ins end here
        rec = record_second_step(trainer, patch, lambda: trainer.step_batch(next(batches)))
    assert_sync_free(rec, " ".join(overrides))
    cpu, cpu_batches = build()
    cpu.start_checks()
    cpu.begin_epoch()
    cpu.step_batch(next(cpu_batches))
    backward = record_backward_cpu(lambda: cpu.step_batch(next(cpu_batches)))
    return rec.kernels() + backward.kernels()


def test_cheap_keep_step_within_kernel_budget_of_cutout(tiny_overrides):
    base = [*tiny_overrides, "train.deterministic=false"]
    cutout = step_kernels([*base, "aug.method=cutout"])
    keep = step_kernels([*base, "aug.method=keep_cutout", "aug.low_res=true", "aug.early_head=true"])
    print(f"kernels per step: Cutout {len(cutout)}, KeepCutout low-res + early {len(keep)}, "
          f"ratio {len(keep) / len(cutout):.3f}")
    assert len(keep) <= STEP_RATIO * len(cutout), (len(keep), len(cutout))
    assert len(keep) - len(cutout) <= KEEP_EXTRA, (len(keep), len(cutout))
