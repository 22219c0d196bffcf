"""The graph-safe step (issue #18): KeepAugment + forward + loss compiles with ``torch.compile(fullgraph=True,
backend="aot_eager")`` on the CPU as one graph, with no recompilation over three calls, and its loss and
gradients equal the eager step's bit for bit; its random draws are made beforehand (core.draws)."""

import copy
import logging
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters

from core import EarlyHead, KeepAugment
from core.draws import DrawRecorder, Draws, uniform

from .test_early_head import small_cnn

CASES = {
    "keep_cutout_lowres_early": dict(op="cutout", size=4, low_res=True, early=True),
    "keep_cutout": dict(op="cutout", size=4),
    "cutout": dict(op="cutout", size=4, selective=False),
    "keep_cutout_p0.5_mean": dict(op="cutout", size=(3, 5), p=0.5, region_score="mean"),
    "keep_paste_max_logit": dict(op="paste", size=4, target="max_logit"),
    "keep_erasing": dict(op="erasing"),
    "keep_cutmix_lowres": dict(op="cutmix", low_res=True, num_classes=10),
    "cutmix": dict(op="cutmix", selective=False, num_classes=10),
}


def make(case: dict):
    torch.manual_seed(0)
    model = small_cnn()
    opts = dict(case)
    head = EarlyHead(model, "1", 10) if opts.pop("early", False) else None
    return model, KeepAugment(**opts, early_head=head)


def step_fn(model: nn.Module, keep: KeepAugment):
    def step(x, y, source):
        out = keep(model, x, y, x_aug=x.flip(3) if keep.op == "paste" else None, generator=source)
        return F.cross_entropy(model(out.x), out.target)
    return step


def loss_and_grads(model: nn.Module, fn, *args):
    loss = fn(*args)
    return loss, torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_keep_step_compiles_as_one_graph_equal_to_eager(name):
    model, keep = make(CASES[name])
    step = step_fn(model, keep)
    x, y = torch.randn(6, 3, 12, 12), torch.randint(0, 10, (6,))
    recorder = DrawRecorder(torch.Generator().manual_seed(0))
    step(x, y, recorder)  # the eager step that records the plan
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    for seed in range(3):
        state = copy.deepcopy(model.state_dict())  # the saliency pass reads the running BN statistics
        eager = loss_and_grads(model, step, x, y, torch.Generator().manual_seed(seed))
        model.load_state_dict(state)
        got = loss_and_grads(model, compiled, x, y, recorder.plan.draw(torch.Generator().manual_seed(seed)))
        assert torch.equal(got[0], eager[0]), (seed, got[0], eager[0])
        assert all(torch.equal(a, b) for a, b in zip(got[1], eager[1])), seed
    assert len(graphs) == 1, f"{len(graphs)} graphs (recompiled)"
    torch._dynamo.reset()


@pytest.mark.parametrize("name", sorted(CASES))
def test_planned_draws_replay_the_generator_bit_for_bit(name):
    model, keep = make(CASES[name])
    x, y = torch.randn(5, 3, 12, 12), torch.randint(0, 10, (5,))
    x_aug = x.flip(3) if keep.op == "paste" else None
    recorder = DrawRecorder(torch.Generator().manual_seed(1))
    first = keep(model, x, y, x_aug=x_aug, generator=recorder)
    assert len(recorder.plan.specs) >= 1
    generator = torch.Generator().manual_seed(2)
    draws = recorder.plan.draw(generator)
    after_plan = generator.get_state()
    replayed = keep(model, x, y, x_aug=x_aug, generator=draws)
    generator = torch.Generator().manual_seed(2)
    eager = keep(model, x, y, x_aug=x_aug, generator=generator)
    assert torch.equal(generator.get_state(), after_plan)  # the plan consumes the generator as the step does
    assert draws.used == len(draws.tensors)
    assert torch.equal(replayed.boxes, eager.boxes) and torch.equal(replayed.x, eager.x)
    assert torch.equal(first.x, keep(model, x, y, x_aug=x_aug, generator=torch.Generator().manual_seed(1)).x)


def test_draws_that_do_not_match_the_step_are_an_error():
    model, keep = make(CASES["keep_cutout"])
    recorder = DrawRecorder(torch.Generator())
    keep(model, torch.randn(4, 3, 12, 12), torch.randint(0, 10, (4,)), generator=recorder)
    draws = recorder.plan.draw(torch.Generator())
    with pytest.raises(RuntimeError, match=r"draw 0 of the step is .*shape=\(2, 3, 12, 12\).*plan has .*"
                                           r"shape=\(4, 12, 12\)"):
        uniform((2, 3, 12, 12), draws)
    assert isinstance(draws, Draws) and draws.used == 0
    uniform((4, 12, 12), draws)
    with pytest.raises(RuntimeError, match="draw 1 of the step .* plan has nothing"):
        uniform((4, 12, 12), draws)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="inductor's CPU kernels need a C++ compiler (none found)")
def test_keep_step_runs_compiled_by_inductor_on_a_tiny_model(monkeypatch):
    # pytest's log capture would make torch's structured trace log every graph at DEBUG (minutes)
    monkeypatch.setattr(logging.getLogger("torch.__trace"), "disabled", True)
    model, keep = make(CASES["keep_cutout_lowres_early"])
    step = step_fn(model, keep)
    x, y = torch.randn(6, 3, 12, 12), torch.randint(0, 10, (6,))
    recorder = DrawRecorder(torch.Generator().manual_seed(0))
    step(x, y, recorder)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)  # inductor: generated C++ kernels
    for seed in range(3):
        state = copy.deepcopy(model.state_dict())
        eager = loss_and_grads(model, step, x, y, torch.Generator().manual_seed(seed))
        model.load_state_dict(state)
        got = loss_and_grads(model, compiled, x, y, recorder.plan.draw(torch.Generator().manual_seed(seed)))
        assert torch.allclose(got[0], eager[0], rtol=1e-4), (got[0], eager[0])  # fused arithmetic: close
        assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(got[1], eager[1]))
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()
