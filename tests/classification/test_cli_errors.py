"""The first hour through the command line (issue #20): an unreadable image read by DataLoader workers,
a misspelt or inherited ``model.kwargs``, a ``--checkpoint`` that is not one - each one line on stderr
naming the file or key, exit status 2."""

import subprocess
import sys

import pytest

from classification.models import create_model, model_arguments
from classification.schema import ClsConfig
from core.engine.config import ConfigError, load_config

from .conftest import BASE, ROOT
from .test_data import make_folder

DEMO = ROOT / "classification" / "configs" / "demo.yaml"
UDA_BASE = ROOT / "classification" / "configs" / "uda" / "base.yaml"


def tool(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True,
                          cwd=ROOT)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def test_unreadable_image_read_by_workers_is_one_line(tmp_path, tiny_overrides):
    make_folder(tmp_path / "data", corrupt=True)
    out = tool("train_cls.py", str(BASE), *tiny_overrides, "data.dataset=imagefolder", f"data.root={tmp_path / 'data'}",
               "model.num_classes=2", "data.limit_train=0", "data.limit_val=0", "data.batch_size=4",
               "data.workers=2", "data.loader=workers", "train.max_steps_per_epoch=0")
    line = one_line(out.stderr)
    assert out.returncode == 2 and line.startswith("error: cannot read image ")
    assert str(tmp_path / "data" / "train" / "dog" / "9.png") in line and "data.skip_corrupt=true" in line


def test_unreadable_image_read_by_uda_workers_is_one_line(tmp_path):
    make_folder(tmp_path / "data", corrupt=True)
    out = tool("train_uda.py", str(UDA_BASE), "data.dataset=imagefolder", f"data.root={tmp_path / 'data'}",
               "model.num_classes=2", "model.kwargs={}", "data.batch_size=2", "data.workers=2", "data.limit_val=0",
               "uda.labels=2", "uda.unsup_ratio=2", "uda.split=balanced", "train.epochs=1",
               "train.max_steps_per_epoch=4", "train.tensorboard=false", "train.progress=false",
               f"train.output_dir={tmp_path / 'uda'}")
    line = one_line(out.stderr)
    assert out.returncode == 2 and line.startswith("error: cannot read image ") and "9.png" in line


def test_a_misspelt_model_kwarg_names_it_and_the_accepted_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'model.kwargs=\{widht: 16\}'.*cifar_resnet18 takes no "
                                          r"argument widht; it accepts width"):
        load_config(ClsConfig, DEMO, ["model.kwargs={widht: 16}"])
    out = tool("train_cls.py", str(DEMO), "model.kwargs={widht: 16}", f"train.output_dir={tmp_path / 'run'}")
    line = one_line(out.stderr)
    assert out.returncode == 2 and line.startswith("config error:") and "widht" in line and "width" in line
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_inherited_model_kwargs_are_cleared_by_an_empty_mapping():
    with pytest.raises(ConfigError, match="resnet50 takes no argument width"):  # demo.yaml sets {width: 16}
        load_config(ClsConfig, DEMO, ["model.name=resnet50"])
    cfg = load_config(ClsConfig, DEMO, ["model.name=resnet50", "model.kwargs={}"])
    assert cfg.model.kwargs == {}
    cfg = load_config(ClsConfig, DEMO, ["model.name=wrn_28_10", "model.kwargs={}", "model.kwargs.dropout=0.3"])
    assert cfg.model.kwargs == {"dropout": 0.3}
    assert create_model(cfg.model.name, 10, **cfg.model.kwargs).fc.out_features == 10


def test_model_arguments_come_from_the_entry_points():
    assert model_arguments("cifar_resnet18") == ["width"] and model_arguments("wrn_28_2") == ["dropout"]
    assert {"zero_init_residual", "groups", "width_per_group"} <= set(model_arguments("resnet50"))
    assert model_arguments("timm:resnet18") is None
    with pytest.raises(ValueError, match="set model.num_classes"):
        load_config(ClsConfig, BASE, ["model.kwargs={num_classes: 3}"])
    with pytest.raises(ValueError, match=r"model.kwargs \{'widht': 2\} do not fit timm:resnet18"):
        create_model("timm:resnet18", 10, widht=2)


@pytest.mark.parametrize("what", ["README.md", "missing.pt", "empty.pt"])
def test_eval_only_and_visualize_with_a_file_that_is_not_a_checkpoint(tmp_path, what, capsys):
    from tools import train_cls, visualize

    path = ROOT / "README.md" if what == "README.md" else tmp_path / what
    if what == "empty.pt":
        path.write_bytes(b"")
    expected = {"README.md": "README.md is not a checkpoint: a text file",
                "missing.pt": f"checkpoint not found: {path}", "empty.pt": "is not a checkpoint: an empty file"}[what]
    for main in (lambda: train_cls.main(["--eval-only", "--checkpoint", str(path)]),
                 lambda: visualize.main(["--checkpoint", str(path), "--out", str(tmp_path / "f.png")])):
        assert main() == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith("error:") and expected in line and "weights_only" not in line
    if what == "README.md":  # and through the command line
        out = tool("train_cls.py", "--eval-only", "--checkpoint", str(path))
        assert out.returncode == 2 and expected in one_line(out.stderr)
