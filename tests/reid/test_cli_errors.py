"""tools/train_reid.py with an unreadable image and DataLoader workers: one ``error:`` line naming the file,
exit 2 - not the worker's traceback (issue #20)."""

import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "reid" / "configs" / "bot_r50_keep.yaml"


def make_market(root: Path) -> Path:
    """A tiny Market-1501 folder (4 train ids x 2 cameras x 2 images) whose training images are all unreadable,
    so that the first batch meets one."""
    base = root / "Market-1501-v15.09.15"
    for folder, ids in (("bounding_box_train", (1, 2, 3, 4)), ("query", (1, 2)), ("bounding_box_test", (1, 2, 3))):
        (base / folder).mkdir(parents=True)
        for pid in ids:
            for cam in (1, 2):
                for k in range(2):
                    name = base / folder / f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg"
                    if folder == "bounding_box_train":
                        name.write_bytes(b"not a jpeg")
                    else:
                        Image.new("RGB", (32, 64), (40 * pid, 60 * cam, 10 * k)).save(name)
    return base


def test_unreadable_image_read_by_workers_is_one_line(tmp_path):
    make_market(tmp_path / "market")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "train_reid.py"), str(CONFIG),
                          f"data.root={tmp_path / 'market'}", "model.pretrained=", "model.depth=18", "data.p=2",
                          "data.k=2", "data.height=64", "data.width=32", "data.pad=4", "data.workers=2",
                          "data.test_batch=16", "train.device=cpu", "train.progress=false", "train.tensorboard=false",
                          "train.epochs=1", "optim.warmup_epochs=0", f"train.output_dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, cwd=ROOT)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert lines[0].startswith("error: cannot read image ")
    assert str(tmp_path / "market" / "Market-1501-v15.09.15" / "bounding_box_train") in lines[0]
