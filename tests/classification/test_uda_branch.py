"""UDA's unsupervised branch runs end to end: with a confidence threshold that lets images through, the
consistency loss is positive, its gradient reaches the weights, and a round's metrics are the averages of
the per-step values (recorded by a hook)."""

import pytest
import torch

from classification.uda import SemiConfig, UDATrainer
from core.engine.config import load_config
from core.engine.hooks import Hook

from .test_uda import UDA_BASE, uda_overrides  # noqa: F401  (fixture)


class StepValues(Hook):
    def __init__(self):
        self.rows = []

    def after_step(self, trainer, batch):
        self.rows.append(dict(zip(trainer.stat_names, trainer.last_stats.sums.tolist())))


@pytest.mark.parametrize("method", ["randaugment", "keep_randaugment"])
def test_unsupervised_branch_trains_and_round_metrics_average_the_steps(method, uda_overrides):  # noqa: F811
    cfg = load_config(SemiConfig, UDA_BASE, [*uda_overrides, f"aug.method={method}", "uda.threshold=0.05",
                                             "train.epochs=1", "train.max_steps_per_epoch=3"])
    trainer = UDATrainer(cfg)
    steps = StepValues()
    trainer.hooks.append(steps)
    metrics = trainer.fit()
    assert len(steps.rows) == 3
    for key in ("unsup_loss", "mask_rate", "sup_loss"):
        assert metrics[key] == pytest.approx(sum(r[key] for r in steps.rows) / 3, rel=1e-6), key
    assert metrics["mask_rate"] > 0 and metrics["unsup_loss"] > 0
    assert metrics["train_loss"] == pytest.approx(sum(r["loss"] for r in steps.rows) / 3, rel=1e-6)


def test_the_consistency_loss_alone_has_a_gradient(uda_overrides):  # noqa: F811
    cfg = load_config(SemiConfig, UDA_BASE, [*uda_overrides, "aug.method=randaugment", "uda.threshold=0.05",
                                             "uda.coeff=1.0"])
    trainer = UDATrainer(cfg)
    batch = next(iter(trainer.train_batches()))
    trainer.module.train()
    from classification.semi import uda_consistency

    unl = batch.unlabelled
    logits, _ = trainer.module(torch.cat([trainer.normalize(unl.weak), trainer.normalize(unl.images)]))
    n = len(unl)
    cons, mask_rate = uda_consistency(logits[:n], logits[n:], cfg.uda.temperature, cfg.uda.threshold)
    assert mask_rate > 0 and cons > 0
    cons.backward()
    grads = [p.grad.abs().sum() for p in trainer.module.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0
