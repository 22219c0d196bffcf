"""On a real GPU (skipped without one): a whole training step of each trainer runs with no host sync
(``torch.cuda.set_sync_debug_mode("error")``), and a run killed mid-epoch resumes bit-exactly with the
device-resident loader."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classification.engine import Trainer
from classification.schema import ClsConfig
from core.engine.checkpoint import load_checkpoint
from core.engine.config import load_config

from .conftest import BASE, ROOT

pytestmark = pytest.mark.cuda
FAST = ["train.device=cuda", "train.amp=bf16", "model.channels_last=true", "train.deterministic=false"]


def sync_free(step, times: int = 3) -> None:
    step()  # warm-up: lazy initialisation (cuBLAS handles, cached constants) may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(times):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.parametrize("method,extra", [
    ("keep_cutout", ["aug.low_res=true", "aug.early_head=true", "aug.saliency_dtype=bfloat16"]),
    ("keep_cutout", []),
    ("keep_cutmix", []),
    ("keep_random_erasing", []),
    ("cutout", []),
])
def test_classification_step_has_no_host_sync(method, extra, tiny_overrides):
    trainer = Trainer(load_config(ClsConfig, BASE, [*tiny_overrides, *FAST, "data.loader=auto", "data.limit_train=128",
                                                    "train.max_steps_per_epoch=0", f"aug.method={method}", *extra]))
    assert trainer.device_data  # auto: device-resident on CUDA
    trainer.start_checks()
    trainer.begin_epoch()
    trainer.loader.set_epoch(0)
    batches = iter(trainer.loader)
    sync_free(lambda: trainer.step_batch(next(batches)))
    trainer.device_check()  # the designed sync point still works (finite loss: no error)


def test_paste_step_on_worker_loader_has_no_host_sync(tiny_overrides):
    trainer = Trainer(load_config(ClsConfig, BASE, [*tiny_overrides, *FAST, "aug.method=keep_autoaugment"]))
    trainer.start_checks()
    trainer.begin_epoch()
    trainer.loader.set_epoch(0)
    batch = next(iter(trainer.loader))  # pinned by the loader
    sync_free(lambda: trainer.step_batch(batch))


def test_non_finite_loss_is_caught_at_the_device_check(tiny_overrides):
    trainer = Trainer(load_config(ClsConfig, BASE, [*tiny_overrides, *FAST, "data.loader=device",
                                                    "train.check_every=1000"]))
    trainer.start_checks()
    trainer.begin_epoch()
    trainer.loader.set_epoch(0)
    batches = iter(trainer.loader)
    trainer.step_batch(next(batches))
    with torch.no_grad():
        trainer.backbone.fc.weight.fill_(float("nan"))
    trainer.step_batch(next(batches))
    with pytest.raises(FloatingPointError, match="non-finite loss at step 2"):
        trainer.device_check()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_fp16_and_bf16_steps_have_no_host_sync(amp, tiny_overrides):
    """fp16 runs a GradScaler: with the fused optimizer its found-inf flag stays on the device."""
    trainer = Trainer(load_config(ClsConfig, BASE, [*tiny_overrides, *FAST, f"train.amp={amp}", "data.loader=device",
                                                    "aug.method=keep_cutout", "aug.saliency_dtype=float16",
                                                    "optim.clip_grad_norm=5"]))
    assert trainer.optimizer.defaults["fused"]
    trainer.start_checks()
    trainer.begin_epoch()
    batches = iter(trainer.train_batches())
    sync_free(lambda: trainer.step_batch(next(batches)))


def test_uda_step_has_no_host_sync(tmp_path):
    from classification.uda import SemiConfig, UDATrainer

    overrides = ["data.dataset=sample", "data.root=", "data.batch_size=8", "data.workers=0", "model.kwargs={}",
                 "uda.labels=100", "uda.split=balanced", "uda.unsup_ratio=2", "train.max_steps_per_epoch=8",
                 "train.tensorboard=false", "train.progress=false", f"train.output_dir={tmp_path / 'uda'}",
                 "aug.method=keep_randaugment", "aug.low_res=true", "uda.threshold=0.05", *FAST]
    trainer = UDATrainer(load_config(SemiConfig, ROOT / "classification" / "configs" / "uda" / "base.yaml", overrides))
    trainer.start_checks()
    trainer.begin_epoch()
    batches = iter(trainer.train_batches())
    sync_free(lambda: trainer.step_batch(next(batches)))


def test_reid_step_has_no_host_sync(tmp_path):
    from reid.engine import ReidTrainer
    from reid.schema import ReidConfig

    from ..reid.test_train import BASE as REID_BASE
    from ..shared_data import extract_once

    mini = extract_once("market1501-mini.tar.gz", "keepaug-market-mini")
    overrides = [f"data.root={mini}", "model.pretrained=", "model.depth=18", "data.p=4", "data.k=2",
                 "data.height=64", "data.width=32", "data.workers=0", "train.progress=false",
                 "train.tensorboard=false", f"train.output_dir={tmp_path / 'reid'}", "aug.keep=true",
                 "aug.low_res=true", *FAST]
    trainer = ReidTrainer(load_config(ReidConfig, REID_BASE, overrides))
    trainer.start_checks()
    trainer.begin_epoch()
    batches = iter(trainer.train_batches())
    sync_free(lambda: trainer.step_batch(next(batches)))


def test_resume_after_a_kill_is_exact_on_cuda(tiny_overrides, tmp_path):
    common = [str(BASE), *tiny_overrides, "train.epochs=2", "aug.method=keep_cutout", "aug.low_res=true",
              "train.device=cuda", "data.loader=device", "train.deterministic=true"]
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONPATH": str(ROOT)}

    def run(script, *args):
        return subprocess.run([sys.executable, str(script), *common, *args], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=600)

    full = run(ROOT / "tools" / "train_cls.py", f"train.output_dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = run(Path(__file__).with_name("kill_worker.py"), f"train.output_dir={tmp_path / 'cut'}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run(ROOT / "tools" / "train_cls.py", f"train.output_dir={tmp_path / 'cut'}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    rows = lambda d: [r.split(",")[:3] for r in (tmp_path / d / "metrics.csv").read_text().splitlines()]  # noqa: E731
    assert rows("full") == rows("cut")  # epoch, train loss, train top-1
