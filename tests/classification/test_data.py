import pytest
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader

from classification.data import EVAL_COLLATE, TrainView, base_dataset, build_datasets
from classification.engine import Trainer


def test_pair_shares_crop_and_flip(tiny_cfg):
    cfg = tiny_cfg("aug.method=keep_randaugment")
    base = base_dataset(cfg.data, "train")
    view = TrainView(base, cfg.data, cfg.aug)
    view.image_op = ImageOps.invert  # a deterministic image-level op: the pair must differ only by it
    torch.manual_seed(0)
    flips = 0
    for i in range(0, 2500, 50):
        clean, augmented, label, index = view[i]
        assert index == i and clean.dtype == torch.uint8 and clean.shape == (3, 32, 32)
        assert torch.equal(augmented, 255 - clean)
        raw = torch.from_numpy(base.images[i]).permute(2, 0, 1)
        flips += not torch.equal(clean[:, 4:28, 4:28], raw[:, 4:28, 4:28])
    assert flips > 5  # the crops/flips were random, yet shared by both views


def test_methods_yield_the_right_items(tiny_cfg):
    assert len(build_datasets(tiny_cfg("aug.method=keep_autoaugment"))[0][0]) == 4
    assert len(build_datasets(tiny_cfg("aug.method=autoaugment"))[0][0]) == 3
    assert len(build_datasets(tiny_cfg("aug.method=keep_cutout"))[0][0]) == 3


def make_folder(root, corrupt=False):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for k in range(3):
                Image.new("RGB", (32, 32), (k * 40, 10, 200)).save(d / f"{k}.png")
    if corrupt:
        (root / "train" / "dog" / "9.png").write_bytes(b"not an image")


def test_imagefolder_layout_and_corrupt_images(tmp_path, tiny_cfg):
    make_folder(tmp_path, corrupt=True)
    cfg = tiny_cfg("data.dataset=imagefolder", f"data.root={tmp_path}", "model.num_classes=2", "data.limit_train=0",
                   "data.limit_val=0")
    train, val, classes = build_datasets(cfg)
    assert classes == ["cat", "dog"] and len(train) == 7 and len(val) == 6
    with pytest.raises(OSError, match=r"9.png.*data.skip_corrupt=true"):  # names the file and the way out
        [train[i] for i in range(len(train))]
    cfg.data.skip_corrupt = True
    train, _, _ = build_datasets(cfg)
    skipped = [name for batch in DataLoader(train, batch_size=4, collate_fn=EVAL_COLLATE) for name in batch.skipped]
    assert len(skipped) == 1 and skipped[0].endswith("9.png")  # the skipped file is named, not only counted


def test_skipped_images_are_named_in_the_train_log(tmp_path, tiny_cfg):
    make_folder(tmp_path / "data", corrupt=True)
    cfg = tiny_cfg("data.dataset=imagefolder", f"data.root={tmp_path / 'data'}", "model.num_classes=2",
                   "data.limit_train=0", "data.limit_val=0", "data.skip_corrupt=true", "train.max_steps_per_epoch=0")
    trainer = Trainer(cfg)
    metrics = trainer.fit()
    assert metrics["skipped"] == 1
    assert "skipped 1 unreadable image(s):" in (trainer.out / "train.log").read_text()
    assert "9.png" in (trainer.out / "train.log").read_text()


def test_missing_data_says_what_layout_is_expected(tmp_path, tiny_cfg):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_datasets(tiny_cfg("data.dataset=cifar10", f"data.root={tmp_path / 'nothing'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_datasets(tiny_cfg("data.dataset=cifar10", f"data.root={tmp_path / 'empty'}"))
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        build_datasets(tiny_cfg("data.dataset=imagefolder", f"data.root={tmp_path / 'empty'}"))
    with pytest.raises(ValueError, match="num_classes"):
        make_folder(tmp_path / "two")
        build_datasets(tiny_cfg("data.dataset=imagefolder", f"data.root={tmp_path / 'two'}"))


def test_download_offline_gives_a_clear_message(tmp_path, tiny_cfg, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar as cifar

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(ConnectionError, match="offline"):
        build_datasets(tiny_cfg("data.dataset=cifar10", f"data.root={tmp_path / 'c10'}", "data.download=true"))


def test_shared_cifar_archive_in_imagefolder_layout(tmp_path, tiny_cfg):
    import tarfile
    from pathlib import Path

    archive = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip("shared CIFAR-10 archive not present")
    picked, per_class = [], {}
    with tarfile.open(archive) as tar:
        for m in tar:
            parts = Path(m.name).parts
            if m.isfile() and len(parts) >= 3 and per_class.get(parts[-3:-1], 0) < 3:
                per_class[parts[-3:-1]] = per_class.get(parts[-3:-1], 0) + 1
                picked.append(m)
            if len(picked) == 60:
                break
        tar.extractall(tmp_path, members=picked, filter="data")
    root = next(p.parent for p in tmp_path.rglob("test") if p.is_dir())
    train, val, classes = build_datasets(tiny_cfg(f"data.root={root}", "data.dataset=cifar10", "data.limit_train=0",
                                                  "data.limit_val=0"))
    assert len(classes) == 10 and len(train) == len(val) == 30
    assert train[0][0].shape == (3, 32, 32)
