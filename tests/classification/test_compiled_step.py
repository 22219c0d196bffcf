"""``model.compile=true`` (issue #18): the classification trainer compiles its step's graph-safe part (KeepAugment
with the saliency pass, the forward, the loss) as one graph. With the ``aot_eager`` backend (the graph as
traced, no code generation) the run is bit for bit the eager run; inductor itself runs on a tiny model in
tests/core/test_compile.py (on this CPU its compiled backward of a CIFAR ResNet corrupts the heap, see
docs/benchmarks.md#compiled-step)."""

import logging

import torch
from torch._dynamo.utils import counters

from classification.engine import Trainer

KEEP = ["aug.method=keep_cutout", "aug.low_res=true", "aug.early_head=true", "data.loader=device",
        "train.max_steps_per_epoch=3", "train.deterministic=false"]


def test_compiled_keep_step_is_one_graph_and_the_eager_run_bit_for_bit(tiny_cfg, monkeypatch):
    # pytest's log capture would make torch's structured trace log every graph at DEBUG (minutes)
    monkeypatch.setattr(logging.getLogger("torch.__trace"), "disabled", True)
    torch._dynamo.reset()
    counters.clear()
    trainer = Trainer(tiny_cfg(*KEEP, "model.compile=true", "model.compile_backend=aot_eager"))
    trainer.fit()
    assert "compiled by aot_eager as one graph" in (trainer.out / "train.log").read_text()
    assert counters["stats"]["unique_graphs"] == 1  # steps 2 and 3 run it; step 1 recorded the draws
    eager = Trainer(tiny_cfg(*KEEP, f"train.output_dir={trainer.out}_eager"))
    eager.fit()
    assert "eager step" in (eager.out / "train.log").read_text()
    assert torch.equal(trainer.generator.get_state(), eager.generator.get_state())  # the same draws
    got, ref = trainer.module.state_dict(), eager.module.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    torch._dynamo.reset()


def test_compile_backend_is_checked(tiny_cfg):
    import pytest

    from core.engine.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="model.compile_backend must be one of inductor"):
        tiny_cfg("model.compile_backend=tvm")
