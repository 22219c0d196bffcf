"""Kernel budgets of the selective ops (issue #18): on a GPU the step is limited by how many kernels the
host launches, so the number of device kernels one op launches is a tested figure. Counted on fake CUDA
(tests/fake_cuda.py: ops that launch device work, not views, allocations or host scalars), batch 128 at
32 x 32 (the count does not depend on either)."""

import pytest
import torch

from core import KeepAugment

from ..fake_cuda import assert_sync_free, fake_cuda_environment, run_recorded

# op -> (kernels of the selective op with the saliency map given, of the plain op). One region size for the
# batch (cutout, paste): the budget, 40 (87 before; 31 / 19 measured 2026-12-01). A size per image
# (erasing, cutmix: summed-area tables, Marsaglia-Tsang proposals): the counts measured on 2026-12-01.
BUDGETS = {"cutout": (40, 19), "paste": (40, 19), "erasing": (134, 68), "cutmix": (184, 113)}


def op_kernels(op: str, selective: bool, monkeypatch) -> list[str]:
    """The kernels of one ``sample`` + ``apply`` of ``op`` (the second call: fills are built once)."""
    size = 16 if op in ("cutout", "paste") else None
    keep = KeepAugment(op, size, selective=selective, num_classes=10 if op == "cutmix" else None)
    with fake_cuda_environment(monkeypatch):
        x = torch.randn(128, 3, 32, 32, device="cuda")
        y = torch.randint(0, 10, (128,), device="cuda")
        sal = torch.rand(128, 32, 32, device="cuda")
        g = torch.Generator()  # fake random kernels never read it

        def step():
            params = keep.sample(None, x, y, generator=g, saliency=sal if selective else None)
            keep.apply(params, x, y, x_aug=x if op == "paste" else None, generator=g)

        step()
        rec = run_recorded(step)
    assert_sync_free(rec, repr(keep))
    return rec.kernels()


@pytest.mark.parametrize("op", sorted(BUDGETS))
def test_selective_op_kernels_within_budget(op, monkeypatch):
    selective, plain = op_kernels(op, True, monkeypatch), op_kernels(op, False, monkeypatch)
    assert len(selective) <= BUDGETS[op][0], f"{op}: {len(selective)} kernels: {selective}"
    assert len(plain) <= BUDGETS[op][1], f"{op} (plain): {len(plain)} kernels: {plain}"
