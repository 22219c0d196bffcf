import math
import operator

import pytest
import torch
import torch.nn.functional as F

from classification.semi import labelled_split, supervised_loss, tsa_threshold, uda_consistency
from classification.uda import SemiConfig, StepSampler, UDATrainer
from core.engine.config import load_config

from .conftest import ROOT

UDA_BASE = ROOT / "classification" / "configs" / "uda" / "base.yaml"


def test_consistency_matches_hand_computed_value():
    clean = torch.tensor([[2.0, 0.0], [0.1, 0.0]])
    strong = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    loss, mask_rate = uda_consistency(clean, strong, temperature=0.5, threshold=0.8)
    # image 0: p_clean = softmax([2, 0]) = [0.881, 0.119] > 0.8 -> kept; target = softmax([4, 0])
    t = torch.tensor([math.exp(4), 1.0]) / (math.exp(4) + 1)
    kl0 = (t * (t.log() - torch.tensor([math.log(0.5), math.log(0.5)]))).sum()
    # image 1: max prob softmax([0.1, 0]) = 0.525 < 0.8 -> masked out; mean over both images
    assert torch.allclose(loss, kl0 / 2, atol=1e-6)
    assert mask_rate.item() == 0.5


def test_sharpening_and_masking_switches():
    clean, strong = torch.randn(8, 10) * 3, torch.randn(8, 10)
    plain, rate = uda_consistency(clean, strong, temperature=0, threshold=-1)
    ref = F.kl_div(F.log_softmax(strong, -1), F.softmax(clean, -1), reduction="batchmean")
    assert torch.allclose(plain, ref, atol=1e-6) and rate.item() == 1.0
    sharp, _ = uda_consistency(clean, strong, temperature=0.4, threshold=-1)
    assert not torch.allclose(sharp, plain)
    _, none_kept = uda_consistency(clean, strong, temperature=0.4, threshold=1.0)
    assert none_kept.item() == 0.0


def test_no_gradient_through_the_clean_branch():
    clean = torch.randn(4, 10, requires_grad=True)
    strong = torch.randn(4, 10, requires_grad=True)
    loss, _ = uda_consistency(clean, strong, 0.4, -1)
    loss.backward()
    assert clean.grad is None and strong.grad.abs().sum() > 0


def test_tsa():
    assert tsa_threshold("", 5, 10, 10) == 1.0
    assert tsa_threshold("linear_schedule", 0, 10, 10) == pytest.approx(0.1)
    assert tsa_threshold("linear_schedule", 10, 10, 10) == pytest.approx(1.0)
    assert tsa_threshold("log_schedule", 5, 10, 10) > tsa_threshold("linear_schedule", 5, 10, 10)
    logits = torch.tensor([[5.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 0])
    # first example is confident (p = 0.993 > 0.6) and dropped; the loss is the second one's CE
    assert torch.allclose(supervised_loss(logits, y, 0.6), F.cross_entropy(logits[1:], y[1:]))
    assert torch.allclose(supervised_loss(logits, y, 1.0), F.cross_entropy(logits, y))


def test_split_is_balanced_deterministic_and_complete():
    labels = [i % 10 for i in range(1000)]
    a, rest = labelled_split(labels, 250, 10, seed=3)
    b, _ = labelled_split(labels, 250, 10, seed=3)
    c, _ = labelled_split(labels, 250, 10, seed=4)
    assert a == b and a != c
    assert sorted(a + rest) == list(range(1000)) and not set(a) & set(rest)
    assert torch.bincount(torch.tensor([labels[i] for i in a])).tolist() == [25] * 10
    with pytest.raises(ValueError, match="multiple"):
        labelled_split(labels, 255, 10, 0)


def test_step_sampler_is_restart_exact_and_sharded():
    full = StepSampler(50, 8, 0, 1, seed=1, start_step=0)
    it = iter(full)
    stream = [next(it) for _ in range(8 * 20)]
    later = iter(StepSampler(50, 8, 0, 1, seed=1, start_step=7))
    assert [next(later) for _ in range(8 * 13)] == stream[8 * 7:]
    r0, r1 = iter(StepSampler(50, 5, 0, 2, 1, 0)), iter(StepSampler(50, 5, 1, 2, 1, 0))
    first0, first1 = [next(r0) for _ in range(25)], [next(r1) for _ in range(25)]
    assert not {i for i, _ in first0} & {i for i, _ in first1}
    assert [pos for _, pos in first0] == list(range(25))  # the stream position seeds each image's draws


@pytest.fixture
def uda_overrides(tmp_path):
    return ["data.dataset=sample", "data.root=", "data.batch_size=10", "data.workers=0", "data.limit_val=40",
            "model.kwargs={}", "uda.labels=100", "uda.unsup_ratio=2", "train.epochs=2", "train.max_steps_per_epoch=2",
            "uda.split=balanced",  # the sample is class-sorted: UDA's default (the first images) is refused there
            "train.tensorboard=false", "train.progress=false", "train.deterministic=true",
            f"train.output_dir={tmp_path / 'uda'}"]


@pytest.mark.parametrize("method", ["randaugment", "keep_randaugment"])
def test_short_uda_run(method, uda_overrides):
    trainer = UDATrainer(load_config(SemiConfig, UDA_BASE, [*uda_overrides, f"aug.method={method}"]))
    metrics = trainer.fit()
    assert trainer.step == 4 and 0 <= metrics["mask_rate"] <= 1 and metrics["unsup_loss"] >= 0
    assert (trainer.out / "split.json").is_file() and (trainer.out / "metrics.csv").is_file()
    assert "unsup_loss" in (trainer.out / "metrics.csv").read_text()


def guarded_labels(labelled: set[int]):
    """A label list whose only readable entries are the labelled images' (by int or numpy int index): a
    slice, an iteration, a copy, an unlabelled index or any other attribute is an AssertionError."""

    class Guarded:
        def __init__(self, labels):
            self._labels = list(labels)

        def __len__(self):
            return len(self._labels)

        def __getitem__(self, i):
            if isinstance(i, slice):
                raise AssertionError(f"labels read by a slice {i}")
            k = operator.index(i) % len(self._labels)  # ints, numpy ints, negative indices
            if k not in labelled:
                raise AssertionError(f"the label of unlabelled image {k} was read")
            return self._labels[k]

        def __iter__(self):
            raise AssertionError("all labels were read")

        def __getattr__(self, name):  # copy(), tolist(), __array__ ...
            raise AssertionError(f"labels accessed through {name}")

    return Guarded


def test_the_label_guard_catches_every_way_in():
    import copy

    import numpy as np

    guard = guarded_labels({0, 2})([5, 6, 7, 8])
    assert guard[0] == 5 and guard[np.int64(2)] == 7 and len(guard) == 4
    for read in (lambda: guard[1], lambda: guard[np.int32(3)], lambda: guard[-1], lambda: guard[0:2],
                 lambda: list(guard), lambda: guard.copy(), lambda: copy.copy(guard), lambda: np.asarray(guard)):
        with pytest.raises(AssertionError):
            read()


def test_unlabelled_labels_are_never_read_and_resume_is_exact(uda_overrides, tmp_path, monkeypatch):
    workers = "data.workers=2"  # each image's RandAugment is seeded by its stream position: exact with workers
    cfg = load_config(SemiConfig, UDA_BASE, [*uda_overrides, "aug.method=keep_randaugment", workers])
    reference = UDATrainer(cfg)
    reference.fit()
    import classification.uda as uda_module

    real = uda_module.base_dataset
    labelled = set(__import__("json").loads((reference.out / "split.json").read_text())["labelled"])

    Guarded = guarded_labels(labelled)

    def guarded_base(data_cfg, split):
        base = real(data_cfg, split)
        if split == data_cfg.train_split:
            base.labels = Guarded(base.labels)
        return base

    monkeypatch.setattr(uda_module, "base_dataset", guarded_base)
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "split.json").write_text((reference.out / "split.json").read_text())
    cut = load_config(SemiConfig, UDA_BASE, [*uda_overrides, "aug.method=keep_randaugment", workers,
                                             f"train.output_dir={out}", "train.stop_after_epoch=1"])
    UDATrainer(cut).fit()
    cut.train.stop_after_epoch = 0
    resumed = UDATrainer(cut)
    resumed.fit(resume=True)
    for a, b in zip(reference.backbone.state_dict().values(), resumed.backbone.state_dict().values()):
        assert torch.equal(a, b)


def test_keep_needs_max_logit(uda_overrides):
    with pytest.raises(ValueError, match="max_logit"):
        load_config(SemiConfig, UDA_BASE, [*uda_overrides, "aug.method=keep_randaugment",
                                           "aug.saliency_target=label"])


def test_round_metrics_are_per_step_averages(uda_overrides):
    trainer = UDATrainer(load_config(SemiConfig, UDA_BASE, [*uda_overrides, "train.epochs=1"]))
    m = trainer.fit()
    assert 0 <= m["mask_rate"] <= 1 and m["sup_loss"] < 10 and m["train_loss"] < 20
