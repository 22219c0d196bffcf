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


def test_eval_only_takes_the_checkpoint_config_and_errors_are_one_line(tiny, tmp_path, capsys):  # noqa: F811
    """In-process through ``train_reid.main`` (the subprocess path is test_train's and test_cli_errors')."""
    from tools import train_reid

    first = make(tiny)  # a ResNet-18 (model.depth=18), while BASE says 50
    first.fit()
    ckpt = str(first.out / "last.pt")
    fresh = tmp_path / "eval_here"
    # the stored config alone, or BASE (depth 50, tensorboard on, 256 x 128) + its model (at the tiny run's size)
    for config in ([], [str(BASE)]):
        code = train_reid.main([*config, "--eval-only", "--checkpoint", ckpt, f"train.output_dir={fresh}",
                                f"data.root={tiny[0].split('=', 1)[1]}", "data.workers=0", "train.device=cpu",
                                "data.height=64", "data.width=32", "--out", str(tmp_path / "m.json")])
        assert code == 0, capsys.readouterr().err[-2000:]
        assert "mAP" in json.loads((tmp_path / "m.json").read_text())
        assert not (fresh / "tb").exists()  # evaluating writes no TensorBoard folder
    capsys.readouterr()
    assert train_reid.main(["--eval-only", "--checkpoint", str(tmp_path / "absent.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint not found" in err
    assert train_reid.main(["--eval-only", "--checkpoint", ckpt, f"data.root={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err
