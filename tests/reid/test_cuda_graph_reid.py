"""train.cuda_graph through the re-ID trainer on the CPU (as tests/classification/test_cuda_graph_step.py):
the BoT step with selective random erasing (ID + triplet + centre loss, Adam and the centre SGD, fused as on
CUDA) captured by the CUDA-graph stand-in and replayed equals the eager run bit for bit."""

import torch

from core.engine.config import load_config
from core.engine.trainer import TrainerBase
from reid.engine import ReidTrainer
from reid.schema import ReidConfig

from ..graph_emulator import EmulatedGraphs
from .test_train import BASE, tiny  # noqa: F401  (the tiny re-ID config fixture)


def test_reid_replay_equals_eager(tiny, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(TrainerBase, "optimizer_options", lambda self: {"fused": True})
    runs = {}
    for name in ("eager", "graph"):
        trainer = ReidTrainer(load_config(ReidConfig, BASE, [*tiny, "train.epochs=2", "eval.every=100",
                                                             f"train.output_dir={tmp_path / name}"]))
        if name == "graph":
            trainer.use_graphs(EmulatedGraphs(trainer.generator), warmup=1)
        runs[name] = (trainer, trainer.fit())
    (eager, m_eager), (graph, m_graph) = runs["eager"], runs["graph"]
    assert graph.graphed.replays == 7  # 2 epochs of 4 steps: one warm-up step, then captured and replayed
    assert graph.optimizer.param_groups[0]["capturable"]  # Adam refuses a CUDA-graph capture without it
    assert m_graph["train_loss"] == m_eager["train_loss"] and m_graph["lr"] == m_eager["lr"]
    for (k, a), b in zip(eager.module.state_dict().items(), graph.module.state_dict().values()):
        assert torch.equal(a, b), k  # network, BN statistics and the centres
    for opt_e, opt_g in ((eager.optimizer, graph.optimizer), (eager.center_optimizer, graph.center_optimizer)):
        for p_e, p_g in zip(opt_e.param_groups[0]["params"], opt_g.param_groups[0]["params"]):
            assert all(torch.equal(v, opt_g.state[p_g][k]) for k, v in opt_e.state[p_e].items())
