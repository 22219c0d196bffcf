"""core.engine: the typed batch, hooks, run logs, shared config sections, the loop's bookkeeping and old
checkpoints."""

import csv

import pytest
import torch

from classification.engine import Trainer
from core.engine import run_dir
from core.engine.batch import Batch, Collate, Corrupt
from core.engine.checkpoint import atomic_save, load_checkpoint
from core.engine.config import ConfigError, load_config
from core.engine.hooks import Hook, check_hooks
from core.engine.logs import RunLog
from core.engine.sections import SaliencyConfig, TrainConfig, keep_from_config
from reid.schema import ReidConfig

from ..classification.conftest import tiny_cfg, tiny_overrides  # noqa: F401  (fixtures)


def test_collate_builds_a_typed_batch_and_names_skipped_files():
    collate = Collate(("clean", "images", "labels", "indices"))
    item = (torch.zeros(3, 4, 4, dtype=torch.uint8), torch.ones(3, 4, 4, dtype=torch.uint8), 7, 11)
    err = OSError("bad")
    err.path = "x/9.png"
    batch = collate([item, Corrupt(err), item])
    assert isinstance(batch, Batch) and len(batch) == 2 and batch.skipped == ["x/9.png"]
    assert batch.labels.tolist() == [7, 7] and batch.indices.tolist() == [11, 11]
    assert batch.images.sum() == 2 * 48 and batch.clean.sum() == 0 and batch.weak is None
    empty = collate([Corrupt(err)])
    assert empty.empty and len(empty) == 0 and empty.skipped == ["x/9.png"]
    with pytest.raises(ValueError, match="unknown batch field"):
        Collate(("images", "pids"))
    with pytest.raises(ValueError, match="items have 4 parts"):
        Collate(("images", "labels"))([item])


def test_hooks_must_be_declared_hooks():
    class Duck:
        def after_step(self, trainer, batch):
            pass

    with pytest.raises(TypeError, match="Hook instances, got Duck"):
        check_hooks([Duck()])
    assert len(check_hooks([Hook()])) == 1


def test_every_hook_method_runs_in_order(tiny_cfg):  # noqa: F811
    class Record(Hook):
        def __init__(self):
            self.calls = []

        def before_train(self, trainer):
            self.calls.append(("before_train", trainer.epoch, trainer.step))

        def after_step(self, trainer, batch):
            self.calls.append(("after_step", trainer.step, len(batch)))

        def after_epoch(self, trainer, epoch):
            self.calls.append(("after_epoch", epoch))

        def after_train(self, trainer):
            self.calls.append(("after_train", trainer.epoch))

    rec = Record()
    Trainer(tiny_cfg("train.epochs=2"), hooks=[rec]).fit()
    assert rec.calls == [("before_train", 0, 0), ("after_step", 1, 16), ("after_step", 2, 16), ("after_epoch", 1),
                         ("after_step", 3, 16), ("after_step", 4, 16), ("after_epoch", 2), ("after_train", 2)]


def test_run_log_adds_columns_that_appear_later(tmp_path):
    log = RunLog(tmp_path, enabled=True, tensorboard=False)
    log.epoch({"epoch": 1, "train_loss": 2.0})
    log.epoch({"epoch": 2, "train_loss": 1.5, "rank1": 30.0})
    log.epoch({"epoch": 3, "train_loss": 1.0})
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank1"] for r in rows] == ["", "30.0", ""] and None not in rows[1]
    assert log.last_row() == {"epoch": 3, "train_loss": 1.0}
    log.truncate_after(2)
    assert log.last_row() == {"epoch": 2, "train_loss": 1.5, "rank1": 30.0}


def test_saliency_section_is_validated_once_for_every_schema(tmp_path):
    for bad, match in (("aug.saliency_dtype=half", "aug.saliency_dtype"), ("aug.tau=1.5", "aug.tau"),
                       ("aug.region_score=max", "aug.region_score"), ("aug.saliency_target=x", "aug.saliency_target")):
        with pytest.raises(ConfigError, match=match):
            load_config(ReidConfig, None, [bad])
    cfg = load_config(ReidConfig, None, ["aug.saliency_dtype=bfloat16", "aug.tau=0.7"])
    keep = keep_from_config("erasing", cfg.aug, selective=True)
    assert keep.saliency_dtype == torch.bfloat16 and keep.tau == 0.7 and keep.low_res  # re-ID default: low-res
    assert isinstance(cfg.aug, SaliencyConfig) and isinstance(cfg.train, TrainConfig)
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(ReidConfig, None, ["train.amp=fp8"])


def test_resume_rules_are_declared_by_each_schema():
    from classification.schema import ClsConfig

    assert "eval." not in run_dir.MAY_CHANGE and "eval." in run_dir.may_change(ReidConfig)
    assert "train.eval_every" in run_dir.may_change(ClsConfig) and "eval." not in run_dir.may_change(ClsConfig)


def test_a_checkpoint_from_before_a_new_key_still_resumes(tiny_cfg, tmp_path):  # noqa: F811
    trainer = Trainer(tiny_cfg("train.epochs=2", "train.stop_after_epoch=1"))
    trainer.fit()
    last = trainer.out / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["config"]["aug"]["region_score"]  # as written before the key existed
    atomic_save(ckpt, last)
    resumed = Trainer(tiny_cfg("train.epochs=2"))
    resumed.fit(resume=True)
    assert resumed.epoch == 2


def test_changed_settings_on_resume_are_written_to_train_log(tiny_cfg):  # noqa: F811
    Trainer(tiny_cfg("train.epochs=2", "train.stop_after_epoch=1")).fit()
    trainer = Trainer(tiny_cfg("train.epochs=3", "train.eval_every=3"))
    trainer.fit(resume=True)
    log = (trainer.out / "train.log").read_text()
    assert "resuming with changed settings: train.epochs: 2 -> 3; train.eval_every: 1 -> 3" in log


def test_progress_bar_shows_figures_without_waiting(tiny_cfg, monkeypatch):  # noqa: F811
    from core.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "PROGRESS_SECONDS", 0.0)  # refresh at every step
    trainer = Trainer(tiny_cfg("train.progress=true", "train.check_every=1000", "train.max_steps_per_epoch=3",
                               "data.limit_train=48"))
    shown = []
    monkeypatch.setattr(trainer_module.TrainerBase, "show_progress",
                        lambda self, sums, steps, seconds: shown.append((steps, sums)))
    trainer.fit()
    # at step 2 the copy made at step 1 is shown, at step 3 the one of step 2; then the epoch-end read
    assert [s for s, _ in shown] == [1, 2, 3]
    assert shown[0][1][2] == 16 and shown[1][1][2] == 32
