"""The early head under DDP with 2 gloo processes: kept outside the DDP module its weights drift apart
across ranks; inside it (``DDP(BackboneWithHead(backbone, head))``) they stay identical."""

import torch
import torch.multiprocessing as mp

from tests.core import ddp_head_worker


def test_head_inside_the_ddp_module_stays_identical_across_ranks(tmp_path):
    mp.spawn(ddp_head_worker.main, args=(f"file://{tmp_path / 'pg'}", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for mode in ("separate", "together"):  # DDP keeps the backbone in step either way
        assert all(torch.equal(r0[mode]["backbone"][k], r1[mode]["backbone"][k]) for k in r0[mode]["backbone"]
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert not torch.equal(r0["separate"]["head"]["fc.weight"], r1["separate"]["head"]["fc.weight"])
    assert all(torch.equal(r0["together"]["head"][k], r1["together"]["head"][k]) for k in ("fc.weight", "fc.bias"))
    assert not torch.equal(r0["together"]["head"]["fc.weight"], r0["separate"]["head"]["fc.weight"])
