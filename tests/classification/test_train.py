import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from classification.augment import METHODS
from classification.engine import Trainer
from classification.export import export_backbone
from core.engine.checkpoint import atomic_save, load_checkpoint
from core.engine.config import ConfigError
from core.engine.hooks import Hook

from .conftest import BASE, ROOT


@pytest.mark.parametrize("method", METHODS)
def test_short_run_per_method(method, tiny_cfg):
    trainer = Trainer(tiny_cfg(f"aug.method={method}", "model.num_classes=10"))
    before = [p.detach().clone() for p in trainer.backbone.parameters()]
    metrics = trainer.fit()
    assert trainer.step == 2 and trainer.epoch == 1
    assert 0 <= metrics["val_top1"] <= 100 and metrics["train_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.backbone.parameters()))
    assert (trainer.out / "last.pt").is_file() and (trainer.out / "metrics.csv").is_file()
    assert (trainer.out / "config.yaml").is_file()


def test_cpu_bf16_autocast_and_channels_last(tiny_cfg):
    trainer = Trainer(tiny_cfg("aug.method=keep_cutmix", "train.amp=bf16", "model.channels_last=true",
                               "aug.saliency_dtype=bfloat16"))
    metrics = trainer.fit()
    assert metrics["train_loss"] > 0 and trainer.step == 2


def test_low_res_early_head_run_checkpoints_the_head(tiny_cfg):
    trainer = Trainer(tiny_cfg("aug.method=keep_cutout", "aug.low_res=true", "aug.early_head=true"))
    head_before = trainer.head.fc.weight.detach().clone()
    trainer.fit()
    assert not torch.equal(head_before, trainer.head.fc.weight)  # the aux head is trained
    ckpt = load_checkpoint(trainer.out / "last.pt")
    assert torch.equal(ckpt["aux_head"]["fc.weight"], trainer.head.fc.weight)
    assert not any("head" in k for k in ckpt["model"])


def run_cli(*args):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "train_cls.py"), *args], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("loader", [
    pytest.param(["data.loader=workers", "data.workers=2"], id="workers2"),  # persistent workers, per-item seeds
    pytest.param(["data.loader=device"], id="device"),
])
def test_resume_after_a_kill_is_exact(loader, tiny_overrides, tmp_path):
    common = [str(BASE), *tiny_overrides, "train.epochs=2", "aug.method=keep_cutout", "train.device=cpu", *loader]
    run_cli(*common, f"train.output_dir={tmp_path / 'full'}")
    killed = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_worker.py")), *common,
                             f"train.output_dir={tmp_path / 'cut'}"], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1  # killed during epoch 2
    assert len(metrics_rows(tmp_path / "cut")) == 1
    run_cli(*common, f"train.output_dir={tmp_path / 'cut'}", "--resume")
    full, resumed = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert resumed["config"]["data"]["loader"] == loader[0].split("=")[1]
    assert resumed["epoch"] == full["epoch"] == 2 and resumed["step"] == full["step"] == 4
    assert full["model"].keys() == resumed["model"].keys()
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    rows_full, rows_cut = metrics_rows(tmp_path / "full"), metrics_rows(tmp_path / "cut")
    assert len(rows_cut) == len(rows_full) == 2  # one row per epoch, no duplicate
    for a, b in zip(rows_full, rows_cut):
        for col in ("epoch", "train_loss", "train_top1", "lr", "val_top1", "val_top5", "skipped"):
            assert a[col] == b[col], (col, a, b)


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tiny_cfg):
    class Poison(Hook):
        def after_step(self, trainer, batch):
            if trainer.step == 2:
                with torch.no_grad():
                    trainer.backbone.fc.weight.fill_(float("nan"))

    trainer = Trainer(tiny_cfg("train.epochs=2"), hooks=[Poison()])
    with pytest.raises(FloatingPointError, match="non-finite loss at step 3"):
        trainer.fit()
    assert load_checkpoint(trainer.out / "last.pt")["epoch"] == 1


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    atomic_save({"a": 1}, path)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"a": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["a"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_export_round_trip_into_torchvision(tiny_cfg, tmp_path):
    trainer = Trainer(tiny_cfg("model.name=resnet50", "model.kwargs={}", "train.max_steps_per_epoch=1",
                               "aug.early_head=true", "aug.method=keep_cutout"))
    trainer.fit()
    out = tmp_path / "backbone.pth"
    info = export_backbone(trainer.out / "last.pt", out)
    assert info["dropped_keys"] == ["fc.weight", "fc.bias"] and out.with_suffix(".json").is_file()
    fresh = torchvision.models.resnet50()
    result = fresh.load_state_dict(torch.load(out), strict=False)
    assert result.unexpected_keys == [] and sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    export_backbone(trainer.out / "last.pt", tmp_path / "full.pth", with_classifier=True)
    fresh = torchvision.models.resnet50(num_classes=10)
    fresh.load_state_dict(torch.load(tmp_path / "full.pth"))  # strict: nothing missing or unexpected
    assert torch.equal(fresh.layer1[0].conv1.weight, trainer.backbone.layer1[0].conv1.weight)


def test_eval_only_cli(tiny_overrides, tmp_path):
    common = [str(BASE), *tiny_overrides]
    run_cli(*common)
    out = run_cli(*common, "--eval-only", "--checkpoint", str(tmp_path / "run" / "last.pt"))
    assert '"val_top1"' in out.stdout


def test_cli_config_error_names_key(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "train_cls.py"), str(BASE), "optim.lrr=1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "optim.lrr" in out.stderr


def test_bf16_on_a_cpu_without_bf16_units_is_named(tiny_cfg, monkeypatch):
    from core.engine.trainer import slow_bf16_settings

    cfg = tiny_cfg("train.amp=bf16", "aug.saliency_dtype=bfloat16")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert slow_bf16_settings(cfg, torch.device("cpu")) == ["train.amp=bf16", "aug.saliency_dtype=bfloat16"]
    assert slow_bf16_settings(cfg, torch.device("cuda")) == []
    assert slow_bf16_settings(tiny_cfg(), torch.device("cpu")) == []
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert slow_bf16_settings(cfg, torch.device("cpu")) == []


def test_clip_grad_norm_bounds_the_global_gradient_norm(tiny_cfg):
    def grad_norm(trainer):
        trainer.loader.set_epoch(0)
        batch = next(iter(trainer.loader))
        trainer.run_step(batch)
        grads = [p.grad for p in trainer.module.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()

    free = grad_norm(Trainer(tiny_cfg("aug.method=cutout")))
    clipped = grad_norm(Trainer(tiny_cfg("aug.method=cutout", f"optim.clip_grad_norm={free / 10}")))
    assert clipped <= free / 10 * (1 + 1e-4) and clipped >= free / 10 * 0.99  # clipped to the bound
    with pytest.raises(ConfigError, match="optim.clip_grad_norm must be >= 0"):
        tiny_cfg("optim.clip_grad_norm=-1")
