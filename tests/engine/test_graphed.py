"""core.engine.graphed (train.cuda_graph) on the CPU, through the CUDA-graph stand-in of tests/graph_emulator.py:
warm-up, capture, replay and the eager partial batch give the eager run's numbers bit for bit; the stand-in
itself freezes a float learning rate and refuses a host read, as a real capture would."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.engine.batch import Batch
from core.engine.graphed import GraphedStep, batch_signature, lr_as_float, lr_on_device, make_capturable
from core.engine.trainer import StepStats

from ..graph_emulator import EmulatedGraphs, HostRead

SIZES = [4, 4, 4, 4, 4, 2, 4, 4]  # the sixth batch is partial: it runs eagerly


def toy_run(seed: int = 0, host_read: bool = False):
    """A toy trainer: BN (running stats), a random draw from its generator, fused SGD, a per-step schedule."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.7 ** s)
    gen = torch.Generator().manual_seed(seed + 1)

    def run_step(batch: Batch) -> StepStats:
        x = batch.images + 0.1 * torch.rand(batch.images.shape, generator=gen)
        loss = F.cross_entropy(model(x), batch.labels)
        if host_read:
            loss = loss * (1.0 if loss.item() > 0 else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss = loss.detach()
        return StepStats(loss, torch.stack([loss, torch.full_like(loss, len(batch))]))

    return model, opt, sched, gen, run_step


def batches(seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    return [Batch(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in SIZES]


def train(step, sched, data):
    losses = []
    for b in data:
        losses.append(step(b).loss.clone())
        sched.step()
    return torch.stack(losses)


def test_replay_equals_eager_bit_for_bit():
    model, _, sched, _, run_step = toy_run()
    eager = train(run_step, sched, batches())
    model_g, opt_g, sched_g, gen_g, run_g = toy_run()
    step = GraphedStep(run_g, EmulatedGraphs(gen_g), torch.device("cpu"), [opt_g], warmup=1)
    graphed = train(step, sched_g, batches())
    assert torch.equal(eager, graphed)
    for (k, a), b in zip(model.state_dict().items(), model_g.state_dict().values()):
        assert torch.equal(a, b), k  # weights and BN running statistics
    assert (step.warmed, step.replays, step.eager_steps) == (1, 6, 1)
    assert isinstance(opt_g.param_groups[0]["lr"], torch.Tensor)  # filled in place by the schedule
    assert opt_g.param_groups[0]["lr"].item() == pytest.approx(0.1 * 0.7 ** len(SIZES))


def test_the_stand_in_freezes_a_float_learning_rate_as_a_graph_would():
    model, _, sched, _, run_step = toy_run()
    train(run_step, sched, batches())
    model_g, _, sched_g, gen_g, run_g = toy_run()
    step = GraphedStep(run_g, EmulatedGraphs(gen_g), torch.device("cpu"), optimizers=[], warmup=1)  # lr stays a float
    train(step, sched_g, batches())
    assert not torch.equal(model[0].weight, model_g[0].weight)


def test_the_stand_in_refuses_a_host_read():
    *_, gen, run_step = toy_run(host_read=True)
    step = GraphedStep(run_step, EmulatedGraphs(gen), torch.device("cpu"), warmup=0)
    with pytest.raises(HostRead, match="_local_scalar_dense"):
        step(batches()[0])


def test_signature_covers_the_unlabelled_half_and_lr_helpers():
    a = Batch(torch.zeros(2, 3), torch.zeros(2), unlabelled=Batch(torch.zeros(4, 3)))
    b = Batch(torch.zeros(2, 3), torch.zeros(2), unlabelled=Batch(torch.zeros(5, 3)))
    assert batch_signature(a) != batch_signature(b)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.25)
    lr_on_device([opt], torch.device("cpu"))
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float32
    assert lr_as_float(opt.state_dict())["param_groups"][0]["lr"] == 0.25
    adam = torch.optim.Adam([nn.Parameter(torch.zeros(2))], lr=0.1, fused=True)
    make_capturable([opt, adam], torch.device("cpu"))
    assert adam.param_groups[0]["capturable"] and "capturable" not in opt.param_groups[0]  # SGD has no flag
