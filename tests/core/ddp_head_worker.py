"""Spawned by tests/core/test_ddp_head.py: two gloo ranks train a backbone + early head for 2 steps on
different data, the head either outside the DDP module (``"separate"``, docs' old advice) or inside it
(``"together"``: ``DDP(BackboneWithHead(backbone, head))``), and save their weights."""

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from core import BackboneWithHead, EarlyHead, KeepAugment


def backbone():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def train(mode: str, rank: int):
    torch.manual_seed(0)  # identical initial weights on both ranks
    net = backbone()
    if mode == "separate":
        model = nn.parallel.DistributedDataParallel(net)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            head = EarlyHead(model, "2", 5, in_channels=8)
        assert any("BackboneWithHead" in str(w.message) for w in caught)
        params = list(model.parameters()) + list(head.parameters())
    else:
        head = EarlyHead(net, "2", 5, in_channels=8)
        model = nn.parallel.DistributedDataParallel(BackboneWithHead(net, head))
        params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.5)
    keep = KeepAugment("cutout", 4, early_head=head)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    for _ in range(2):
        x, y = torch.randn(4, 3, 10, 10, generator=g), torch.randint(0, 5, (4,), generator=g)
        out = keep(model, x, y, generator=g)  # the saliency pass on the wrapped model
        if mode == "separate":
            loss = F.cross_entropy(model(out.x), y) + head.loss(y)
        else:
            logits, aux = model(out.x)
            loss = F.cross_entropy(logits, y) + head.loss(y, aux)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"backbone": {k: v.clone() for k, v in net.state_dict().items()},
            "head": {k: v.clone() for k, v in head.state_dict().items()}}


def main(rank: int, init: str, out_dir: str):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.save({mode: train(mode, rank) for mode in ("separate", "together")}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
