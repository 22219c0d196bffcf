"""The device-resident loader (classification/device_data.py) on the CPU: DistributedSampler's order,
pixel-exact crop + flip, the same crop / flip distribution as the PIL worker path, epoch determinism,
and the ``data.loader`` key in the Trainer. The kill / resume check of the device loader is
parametrized in test_train.py (test_resume_after_a_kill_is_exact)."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from scipy import stats
from torch.utils.data import DistributedSampler

from classification.data import ArrayImages, TrainView, build_datasets, use_device_loader
from classification.device_data import DeviceLoader, crop_flip, crop_flip_params, epoch_order
from classification.engine import Trainer
from classification.schema import ClsConfig
from core.engine.config import ConfigError, load_config
from core.engine.hooks import Hook
from core.engine.seeding import EpochSeeded

from .conftest import BASE

SIZE, PAD = 32, 4
CELLS = (2 * PAD + 1) ** 2 * 2  # (dy, dx, flip)


# -- epoch_order = DistributedSampler ---------------------------------------------------------------
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 7, 10, 12, 13, 50])
def test_epoch_order_is_distributed_samplers(n, world, drop_last):
    for seed in (0, 5):
        for epoch in range(3):
            shards = []
            for rank in range(world):
                sampler = DistributedSampler(range(n), world, rank, shuffle=True, seed=seed, drop_last=drop_last)
                sampler.set_epoch(epoch)
                mine = epoch_order(n, seed, epoch, rank, world, drop_last)
                assert mine.dtype == torch.int64
                assert mine.tolist() == list(sampler), (n, world, rank, seed, epoch, drop_last)
                shards.append(mine.tolist())
            assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
            every = [i for s in shards for i in s]
            if drop_last:  # disjoint shards, and only the n % world tail is left out
                assert len(every) == len(set(every)) == n - n % world
            else:  # everything is covered (padded by wrapping around)
                assert set(every) == set(range(n)) and len(every) == -(-n // world) * world


def test_epoch_order_unshuffled_and_epochs_differ():
    for rank in range(3):
        sampler = DistributedSampler(range(10), 3, rank, shuffle=False)
        assert epoch_order(10, 0, 4, rank, 3, False, shuffle=False).tolist() == list(sampler)
    assert epoch_order(10, 0, 4, 1, 3, False, shuffle=False).tolist() == [1, 4, 7, 0]  # padded by wrapping
    assert epoch_order(10, 0, 0, 0, 1, False).tolist() != epoch_order(10, 0, 1, 0, 1, False).tolist()
    assert sorted(epoch_order(10, 0, 1, 0, 1, False).tolist()) == list(range(10))


# -- crop_flip is the torchvision functional path, pixel for pixel -----------------------------------
def test_crop_flip_matches_torchvision_functional_for_every_offset():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    params = torch.tensor([(dy, dx, f) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1) for f in (0, 1)])
    for img in images:
        batch = img.expand(len(params), -1, -1, -1)
        out = crop_flip(batch, params, PAD)
        assert out.dtype == torch.uint8 and out.shape == (len(params), 3, SIZE, SIZE)
        for (dy, dx, f), got in zip(params.tolist(), out):
            want = TF.crop(TF.pad(img, [PAD], fill=0), dy, dx, SIZE, SIZE)
            if f:
                want = TF.hflip(want)
            assert torch.equal(got, want), (dy, dx, f)


def test_crop_flip_non_square_and_each_image_its_own_params():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (5, 2, 6, 9), dtype=torch.uint8, generator=g)
    params = torch.tensor([[0, 0, 0], [4, 4, 1], [2, 3, 1], [4, 0, 0], [1, 4, 1]])
    out = crop_flip(images, params, 2)
    for img, (dy, dx, f), got in zip(images, params.tolist(), out):
        want = TF.crop(TF.pad(img, [2], fill=0), dy, dx, 6, 9)
        assert torch.equal(got, TF.hflip(want) if f else want)


# -- the same distribution of (dy, dx, flip) as T.RandomCrop(32, padding=4) + T.RandomHorizontalFlip() --
def coordinate_images(n: int) -> np.ndarray:
    """``(n, 32, 32, 3)`` uint8: R = row + 1, G = column + 1 (so zero padding shows as 0), B = 200."""
    rows = np.arange(SIZE)[:, None].repeat(SIZE, 1) + 1
    img = np.stack([rows, rows.T, np.full((SIZE, SIZE), 200)], -1).astype(np.uint8)
    return np.repeat(img[None], n, 0)


def reference_crops() -> torch.Tensor:
    """``(9, 9, 2, 3, 32, 32)``: torchvision's functional pad + crop (+ hflip) of a coordinate image, per cell."""
    img = TF.pad(torch.from_numpy(coordinate_images(1)[0]).permute(2, 0, 1).contiguous(), [PAD], fill=0)
    span = range(2 * PAD + 1)
    crops = [[TF.crop(img, dy, dx, SIZE, SIZE) for dx in span] for dy in span]
    return torch.stack([torch.stack([torch.stack([c, TF.hflip(c)]) for c in row]) for row in crops])


def decode(out: torch.Tensor) -> np.ndarray:
    """Counts per cell (dy, dx, flip) of ``(N, 3, 32, 32)`` crops of :func:`coordinate_images` images, after
    checking that every pixel of each is where that cell's crop puts it (padding zeros included)."""
    mid, k = SIZE // 2, torch.arange(len(out))
    r, g = out[:, 0, :, mid].long(), out[:, 1, mid, :].long()  # a column of row codes, a row of column codes
    i = (r > 0).int().argmax(1)  # the first image row / column (at least 24 of each are in every crop)
    j = (g > 0).int().argmax(1)
    dy = r[k, i] - 1 - i + PAD
    flip = (g[k, j] > g[k, j + 1]).long()
    dx = g[k, j] - 1 - torch.where(flip.bool(), SIZE - 1 - j, j) + PAD
    assert torch.equal(out, reference_crops()[dy, dx, flip])
    return np.bincount(((dy * (2 * PAD + 1) + dx) * 2 + flip).numpy(), minlength=CELLS)


def test_device_crops_have_the_distribution_of_the_pil_path(tiny_cfg):
    n, epochs = 1000, 20  # 20,000 crops per path
    images = coordinate_images(n)
    # the device path: DeviceLoader's train batches over 20 epochs
    loader = DeviceLoader(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.zeros(n, dtype=torch.long),
                          256, train=True, pad=PAD, seed=0)
    device_out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        device_out += [batch for batch, _, _ in loader]
    # the worker path: TrainView's T.RandomCrop(32, padding=4) + T.RandomHorizontalFlip() on PIL, per-item seeds
    cfg = tiny_cfg("aug.method=cutout")
    view = EpochSeeded(TrainView(ArrayImages(images, [0] * n, ["a"]), cfg.data, cfg.aug), seed=0)
    pil_out = [view[(i, epoch)][0] for epoch in range(epochs) for i in range(n)]
    device_counts, pil_counts = decode(torch.cat(device_out)), decode(torch.stack(pil_out))
    assert device_counts.sum() == pil_counts.sum() == n * epochs
    for counts in (device_counts, pil_counts):
        assert (counts > 0).all()  # every offset 0..8 with both flips occurs
        assert stats.chisquare(counts).pvalue > 1e-3  # uniform over the 9 x 9 x 2 cells
    assert stats.chi2_contingency(np.stack([device_counts, pil_counts])).pvalue > 1e-3  # one distribution
    flips = device_counts.reshape(2 * PAD + 1, 2 * PAD + 1, 2).sum((0, 1))
    assert abs(flips[1] / flips.sum() - 0.5) < 0.02  # flip with p = 1/2


# -- DeviceLoader determinism ------------------------------------------------------------------------
def make_loader(seed=0, rank=0, world=1, train=True, n=37, batch=8):
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 5
    return DeviceLoader(images, labels, batch, train=train, pad=2, seed=seed, rank=rank, world=world,
                        drop_last=world > 1, names=torch.arange(n) * 10)


def batches(loader, epoch):
    loader.set_epoch(epoch)
    return [tuple(t.clone() for t in b) for b in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(all(torch.equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


def test_device_loader_epochs_are_functions_of_seed_epoch_rank():
    a, b = make_loader(), make_loader()
    for epoch in (0, 1, 5):
        assert same(batches(a, epoch), batches(b, epoch))
    e0, e1 = batches(make_loader(), 0), batches(make_loader(), 1)
    assert not same(e0, e1)
    assert not same(e0, batches(make_loader(seed=1), 0))
    for other in ((0, 1, 0), (1, 0, 0), (0, 0, 1)):  # crops and flips are redrawn per seed, epoch and rank
        assert not torch.equal(crop_flip_params(37, 2, 0, 0, 0), crop_flip_params(37, 2, *other))
    # an epoch does not depend on the epochs iterated before it
    walked = make_loader()
    for epoch in range(3):
        batches(walked, epoch)
    assert same(batches(walked, 3), batches(make_loader(), 3))
    assert same(batches(walked, 3), batches(walked, 3))  # iterating twice gives the same epoch


def test_device_loader_batches_labels_names_and_ranks():
    loader = make_loader()
    out = batches(loader, 2)
    assert len(loader) == len(out) == 5 and [len(b[0]) for b in out] == [8, 8, 8, 8, 5]  # no batch dropped
    order = epoch_order(37, 0, 2, 0, 1, False)
    params = crop_flip_params(37, 2, 0, 2, 0)
    x = torch.cat([b[0] for b in out])
    assert torch.equal(torch.cat([b[1] for b in out]), order % 5)
    assert torch.equal(torch.cat([b[2] for b in out]), order * 10)  # names, not positions
    assert torch.equal(x, crop_flip(loader.images[order], params, 2))
    # two ranks: disjoint names, both of the shard length; their crops are drawn independently
    r0, r1 = (torch.cat([b[2] for b in batches(make_loader(rank=r, world=2), 2)]) for r in (0, 1))
    assert len(r0) == len(r1) == 18 and not set(r0.tolist()) & set(r1.tolist())
    assert not torch.equal(crop_flip_params(18, 2, 0, 2, 0), crop_flip_params(18, 2, 0, 2, 1))
    # eval: every image in order, untouched
    ev = make_loader(train=False)
    xs = torch.cat([b[0] for b in batches(ev, 3)])
    assert torch.equal(xs, ev.images) and torch.equal(torch.cat([b[2] for b in batches(ev, 0)]), torch.arange(37) * 10)


def test_device_loader_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(torch.zeros(2, 3, 4, 4), torch.zeros(2), 2, train=True)


# -- data.loader in the Trainer ----------------------------------------------------------------------
class Seen(Hook):
    def __init__(self):
        self.steps = []

    def after_step(self, trainer, batch):
        self.steps.append((trainer.epoch, batch.indices.tolist()))


def test_trainer_with_the_device_loader_trains_and_evaluates(tiny_cfg):
    cfg = tiny_cfg("data.loader=device", "train.device=cpu", "train.epochs=2", "train.max_steps_per_epoch=0",
                   "aug.method=keep_cutout")
    trainer = Trainer(cfg, hooks=[seen := Seen()])
    assert trainer.device_data and trainer.steps_per_epoch == 3  # 48 images, batch 16
    before = [p.detach().clone() for p in trainer.backbone.parameters()]
    metrics = trainer.fit()
    assert trainer.step == 6 and trainer.epoch == 2
    assert 0 <= metrics["val_top1"] <= 100 and metrics["train_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.backbone.parameters()))
    assert (trainer.out / "last.pt").is_file() and len((trainer.out / "metrics.csv").read_text().splitlines()) == 3
    # the indices are dataset positions of the limited split, in DistributedSampler's order: the worker path's
    subset = trainer.train_set.indices
    for epoch in (0, 1):
        got = [i for e, idx in seen.steps if e == epoch for i in idx]
        assert got == [subset[k] for k in epoch_order(48, cfg.train.seed, epoch, 0, 1, False).tolist()]
    # the same images and order as the worker path's sampler; labels and eval images are the worker path's
    workers = Trainer(tiny_cfg("data.loader=workers", "train.device=cpu"))
    assert not workers.device_data
    workers.loader.set_epoch(1)
    trainer.loader.set_epoch(1)
    for w, d in zip(workers.loader, trainer.loader):
        assert torch.equal(w.indices, d.indices) and torch.equal(w.labels, d.labels)
    val_w, val_d = list(workers.val_loader), list(trainer.val_loader)
    assert len(val_w) == len(val_d) == 2
    for w, d in zip(val_w, val_d):
        assert all(torch.equal(getattr(w, f), getattr(d, f)) for f in ("images", "labels", "indices"))


def test_device_loader_training_batches_are_the_base_images_cropped(tiny_cfg):
    trainer = Trainer(tiny_cfg("data.loader=device", "train.device=cpu"))
    base = trainer.train_set.dataset.base
    trainer.loader.set_epoch(0)
    batch = next(iter(trainer.loader))
    x, y, idx = batch.images, batch.labels, batch.indices
    order = epoch_order(48, 0, 0, 0, 1, False)[:16]
    params = crop_flip_params(48, 4, 0, 0, 0)[:16]
    raw = torch.from_numpy(base.images[idx.numpy()]).permute(0, 3, 1, 2)
    assert torch.equal(idx, torch.tensor(trainer.train_set.indices)[order])
    assert torch.equal(y, torch.tensor([base.labels[i] for i in idx.tolist()]))
    assert torch.equal(x, crop_flip(raw, params, 4))


def test_loader_key_is_validated(tiny_overrides):
    def load(*extra):
        return load_config(ClsConfig, BASE, [*tiny_overrides, *extra])

    for blocked in (["aug.method=keep_autoaugment"], ["aug.method=randaugment"], ["data.imagenet_style=true"]):
        with pytest.raises(ConfigError, match=r"data\.loader"):
            load("data.loader=device", *blocked)
        assert load("data.loader=workers", *blocked).data.loader == "workers"
        assert not use_device_loader(load("data.loader=auto", *blocked), torch.device("cuda"))
    with pytest.raises(ConfigError, match=r"data\.loader"):
        load("data.loader=gpu")
    cfg = load("data.loader=auto", "aug.method=keep_cutmix")
    assert use_device_loader(cfg, torch.device("cuda")) and not use_device_loader(cfg, torch.device("cpu"))
    assert use_device_loader(load("data.loader=device"), torch.device("cpu"))
    assert not use_device_loader(load("data.loader=workers"), torch.device("cuda"))


def test_auto_picks_workers_on_the_cpu(tiny_cfg):
    trainer = Trainer(tiny_cfg("data.loader=auto", "train.device=cpu"))
    assert trainer.device_data is False and type(trainer.loader).__name__ == "WorkerLoader"


def test_device_loader_needs_images_of_image_size(tiny_cfg):
    with pytest.raises(ValueError, match="data.image_size"):
        build_datasets_and_device_loader(tiny_cfg("data.loader=device", "train.device=cpu", "data.image_size=24"))


def build_datasets_and_device_loader(cfg):
    from classification.data import device_loader
    from core.engine.distributed import DistInfo

    train, _, _ = build_datasets(cfg)
    return device_loader(train, cfg, torch.device("cpu"), DistInfo(), train=True)


def test_decode_all_reads_folders_and_skips_unreadable_files(tmp_path):
    from classification.data import FolderImages
    from classification.device_data import decode_all

    from .test_data import make_folder

    make_folder(tmp_path, corrupt=True)
    base = FolderImages(tmp_path / "train")
    indices = list(range(len(base)))
    bad_pos = next(i for i, (p, _) in enumerate(base.folder.samples) if p.endswith("9.png"))
    with pytest.raises(OSError, match="9.png"):
        decode_all(base, indices, skip_corrupt=False, threads=2)
    images, labels, kept, bad = decode_all(base, indices, skip_corrupt=True, threads=2)
    assert len(bad) == 1 and bad[0].endswith("9.png")
    assert kept.tolist() == [i for i in indices if i != bad_pos]
    assert labels.tolist() == [base.labels[i] for i in kept.tolist()]
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    for img, i in zip(images, kept.tolist()):
        assert torch.equal(img, torch.from_numpy(np.array(base.load_image(i))).permute(2, 0, 1))
