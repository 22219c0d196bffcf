"""The run-directory rules and weights_only checkpoints hold for the re-ID trainer too (one tiny step on the
mini Market-1501; epochs=2 with stop_after_epoch=1 skips the final evaluation)."""

import json

import numpy as np
import pytest
import torch

from core.engine.config import load_config
from core.engine.run_dir import RunDirError
from reid.engine import ReidTrainer
from reid.schema import ReidConfig

from .test_train import BASE, tiny  # noqa: F401  (the tiny re-ID config fixture)


def make(tiny, *extra):  # noqa: F811
    return ReidTrainer(load_config(ReidConfig, BASE, [*tiny, "train.max_steps_per_epoch=1", "train.epochs=2",
                                                      "train.stop_after_epoch=1", *extra]))


def test_reid_checkpoint_loads_weights_only_and_run_dir_rules_hold(tiny):  # noqa: F811
    first = make(tiny)
    first.fit()
    out = first.out
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 1 and "center" in ckpt
    keys = ckpt["rng"][0]["numpy"][1]
    assert isinstance(keys, torch.Tensor) and keys.shape == np.random.get_state()[1].shape
    assert {"config.yaml", "train.log", "env.json", "metrics.csv"} <= {p.name for p in out.iterdir()}

    config_before = (out / "config.yaml").read_bytes()
    with pytest.raises(RunDirError, match="--resume"):  # a second run into the folder
        make(tiny).fit()
    with pytest.raises(RunDirError, match=r"optim.lr: 0.001 -> 0.002"):  # a resume with another recipe
        make(tiny, "optim.lr=0.002").fit(resume=True)
    assert (out / "config.yaml").read_bytes() == config_before
    assert len(json.loads((out / "env.json").read_text())) == 1


def test_eval_only_takes_the_checkpoint_config_and_errors_are_one_line(tiny, tmp_path):  # noqa: F811
    import subprocess
    import sys

    from .test_train import ROOT

    first = make(tiny)  # a ResNet-18 (model.depth=18), while BASE says 50
    first.fit()
    tool = [sys.executable, str(ROOT / "tools" / "train_reid.py")]
    ckpt = str(first.out / "last.pt")
    fresh = tmp_path / "eval_here"
    for config in ([], [str(BASE)]):  # the stored config alone, or BASE (depth 50, tensorboard on) + its model
        out = subprocess.run([*tool, *config, "--eval-only", "--checkpoint", ckpt, f"train.output_dir={fresh}",
                              f"data.root={tiny[0].split('=', 1)[1]}", "data.workers=0", "train.device=cpu",
                              "--out", str(tmp_path / "m.json")], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "mAP" in json.loads((tmp_path / "m.json").read_text())
        assert not (fresh / "tb").exists()  # evaluating writes no TensorBoard folder
    missing = subprocess.run([*tool, "--eval-only", "--checkpoint", str(tmp_path / "absent.pt")],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "checkpoint not found" in missing.stderr
    no_data = subprocess.run([*tool, "--eval-only", "--checkpoint", ckpt, f"data.root={tmp_path / 'nowhere'}"],
                             capture_output=True, text=True, cwd=ROOT)
    assert no_data.returncode == 2 and no_data.stderr.count("\n") == 1 and "nowhere" in no_data.stderr
