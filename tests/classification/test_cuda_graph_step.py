"""train.cuda_graph through the classification and UDA trainers, on the CPU: the CUDA-graph stand-in
(tests/graph_emulator.py) captures the trainer's whole ``run_step`` after one warm-up step and replays it
(the epoch's partial last batch eagerly). As a real graph, it replays device work only, so a per-step value
left on the Python side would freeze; the run must equal the eager run bit for bit. The trainers use the fused
optimizers a CUDA trainer builds (a foreach step would read a tensor learning rate on the host)."""

import csv

import pytest
import torch

from classification.engine import Trainer
from classification.schema import ClsConfig
from classification.uda import SemiConfig, UDATrainer
from core.engine.config import load_config
from core.engine.graphed import CudaGraphs
from core.engine.trainer import TrainerBase

from ..graph_emulator import EmulatedGraphs
from .conftest import BASE
from .test_uda import UDA_BASE

NOT_COMPARED = {"seconds", "img_s"}


@pytest.fixture
def fused(monkeypatch):
    monkeypatch.setattr(TrainerBase, "optimizer_options", lambda self: {"fused": True})


def fit(make, overrides: list[str], out, graphs=None):
    trainer = make([*overrides, f"train.output_dir={out}"])
    if graphs is not None:
        trainer.use_graphs(graphs(trainer.generator), warmup=1)
    trainer.fit()
    with open(out / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k not in NOT_COMPARED} for r in csv.DictReader(f)]
    return trainer, rows


def assert_same_run(make, overrides, tmp_path, graphs=EmulatedGraphs):
    eager, eager_rows = fit(make, overrides, tmp_path / "eager", graphs=None)
    graph, graph_rows = fit(make, overrides, tmp_path / "graph", graphs=graphs)
    assert graph.graphed.replays > 0
    assert graph_rows == eager_rows  # losses, accuracies, learning rate, validation
    for (k, a), b in zip(eager.module.state_dict().items(), graph.module.state_dict().values()):
        assert torch.equal(a, b), k
    momentum = [eager.optimizer.state[p]["momentum_buffer"] for p in eager.module.parameters()]
    assert all(torch.equal(m, graph.optimizer.state[q]["momentum_buffer"])
               for m, q in zip(momentum, graph.module.parameters()))
    return graph


METHODS = [["aug.method=cutout"],
           ["aug.method=keep_cutout", "aug.low_res=true", "aug.early_head=true", "optim.clip_grad_norm=1"]]
IDS = ["cutout", "keep_cutout_low_res_early"]


@pytest.mark.parametrize("extra", METHODS, ids=IDS)
def test_classification_replay_equals_eager(extra, tiny_overrides, tmp_path, fused):
    # 40 images in batches of 16: the third batch of each epoch is partial (eager)
    overrides = [*tiny_overrides, *extra, "data.limit_train=40", "train.max_steps_per_epoch=0", "train.epochs=2"]
    graph = assert_same_run(lambda o: Trainer(load_config(ClsConfig, BASE, o)), overrides, tmp_path)
    assert (graph.graphed.warmed, graph.graphed.replays, graph.graphed.eager_steps) == (1, 3, 2)
    assert graph.step_path.startswith("CUDA graph: the whole step")


@pytest.mark.cuda
@pytest.mark.parametrize("extra", METHODS, ids=IDS)
def test_cuda_graph_replay_equals_eager_on_a_gpu(extra, tiny_overrides, tmp_path):
    """On a real GPU: one warm-up step, then the captured step replayed for 5 batches (the device loader),
    bit for bit the eager run under train.deterministic."""
    overrides = [*tiny_overrides, *extra, "train.device=cuda", "data.loader=device", "data.limit_train=96",
                 "train.max_steps_per_epoch=0", "train.epochs=1"]
    graph = assert_same_run(lambda o: Trainer(load_config(ClsConfig, BASE, o)), overrides, tmp_path, CudaGraphs)
    assert (graph.graphed.warmed, graph.graphed.replays, graph.graphed.eager_steps) == (1, 5, 0)


def test_uda_replay_equals_eager(tmp_path, fused):
    overrides = ["data.dataset=sample", "data.root=", "data.batch_size=4", "data.workers=0", "data.limit_val=20",
                 "model.name=cifar_resnet18", "model.kwargs={width: 4}", "uda.labels=40", "uda.unsup_ratio=2",
                 "uda.split=balanced", "uda.threshold=0.0", "aug.method=keep_randaugment", "train.epochs=2",
                 "train.max_steps_per_epoch=2", "train.tensorboard=false", "train.progress=false",
                 "train.deterministic=true"]
    graph = assert_same_run(lambda o: UDATrainer(load_config(SemiConfig, UDA_BASE, o)), overrides, tmp_path)
    assert graph.graphed.replays == 3


def test_the_log_says_why_the_step_is_not_a_graph(tiny_overrides, tmp_path):
    cfg = load_config(ClsConfig, BASE, [*tiny_overrides, "train.amp=fp16", "model.compile=true"])
    trainer = Trainer(cfg)
    assert trainer.graph_blockers() == ["CUDA only, this run is on cpu"]
    trainer.device = torch.device("cuda")  # the reasons a CUDA run would give (nothing runs on it here)
    assert [r.split(":")[0] for r in trainer.graph_blockers()] == ["train.amp=fp16", "model.compile"]
    off = Trainer(load_config(ClsConfig, BASE, [*tiny_overrides, "train.cuda_graph=false"]))
    assert off.graph_blockers() == ["train.cuda_graph=false"]
    uda = UDATrainer(load_config(SemiConfig, UDA_BASE, [
        "data.dataset=sample", "data.root=", "uda.labels=40", "uda.split=balanced", "uda.tsa=linear_schedule",
        "train.max_steps_per_epoch=1", "model.name=cifar_resnet18", "model.kwargs={width: 4}",
        f"train.output_dir={tmp_path / 'u'}"]))
    uda.device = torch.device("cuda")
    assert uda.graph_blockers() == ["uda.tsa=linear_schedule: its threshold follows the step count, read on the host"]
