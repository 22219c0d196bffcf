"""tools/visualize.py reads what a checkpoint knows: a trainer checkpoint and an export (with its JSON) need
no --width; an export without classifier is a clear error."""

import subprocess
import sys

from classification.engine import Trainer
from classification.export import export_backbone

from .conftest import ROOT


def visualize(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "visualize.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_visualize_trainer_checkpoint_and_exports(tiny_cfg, tmp_path):
    trainer = Trainer(tiny_cfg("aug.method=keep_cutout", "train.max_steps_per_epoch=1"))
    trainer.fit()
    last = trainer.out / "last.pt"
    out = visualize("--checkpoint", str(last), "--num-images", "2", "--out", str(tmp_path / "a.png"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "a.png").stat().st_size > 0
    export_backbone(last, tmp_path / "full.pth", with_classifier=True)
    out = visualize("--checkpoint", str(tmp_path / "full.pth"), "--num-images", "2", "--out", str(tmp_path / "b.png"))
    assert out.returncode == 0, out.stderr[-2000:]
    export_backbone(last, tmp_path / "bare.pth")
    out = visualize("--checkpoint", str(tmp_path / "bare.pth"), "--out", str(tmp_path / "c.png"))
    assert out.returncode != 0 and "--with-classifier" in out.stderr
