from pathlib import Path

import pytest

from reid.datasets import DATASETS, build_dataset
from reid.datasets.market1501 import parse_name
from reid.samplers import IdentitySampler

from ..shared_data import extract_once


def test_registry_and_parsing():
    assert "market1501" in DATASETS
    assert parse_name("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_name("1488_c6s3_085567_02.jpg.jpg") == (1488, 5)
    assert parse_name("-1_c3s2_000001_00.jpg") == (-1, 2)
    with pytest.raises(ValueError, match="cannot parse"):
        parse_name("img_001.jpg")
    with pytest.raises(ValueError, match="unknown re-ID dataset"):
        build_dataset("duke", ".")


def make_market(root: Path):
    names = {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c1s1_000001_00.jpg",
                                    "-1_c1s1_000002_00.jpg"],
             "query": ["0003_c1s1_000001_00.jpg", "1488_c6s3_085567_02.jpg.jpg"],
             "bounding_box_test": ["0003_c2s1_000001_00.jpg", "0000_c1s1_000003_00.jpg", "-1_c2s1_000004_00.jpg",
                                   "1488_c1s3_000001_01.jpg"]}
    for d, files in names.items():
        (root / "Market-1501-v15.09.15" / d).mkdir(parents=True)
        for f in files:
            (root / "Market-1501-v15.09.15" / d / f).write_bytes(b"")


def test_junk_distractors_relabel_and_subfolder(tmp_path):
    make_market(tmp_path)
    ds = build_dataset("market1501", tmp_path)
    assert sorted(p for _, p, _ in ds.train) == [0, 0, 1]  # -1 dropped, ids relabelled
    assert {p for _, p, _ in ds.gallery} == {0, 3, 1488}  # distractor 0 kept, junk dropped
    assert {(p, c) for _, p, c in ds.query} == {(3, 0), (1488, 5)}  # .jpg.jpg parsed, cameras 0-based


def test_missing_folder_names_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="bounding_box_train"):
        build_dataset("market1501", tmp_path)


def test_mini_subset():
    root = extract_once("market1501-mini.tar.gz", "keepaug-market-mini")
    s = build_dataset("market1501", root).statistics()
    assert s["train"] == {"ids": 25, "images": 374, "cameras": 6}
    assert s["query"]["images"] == 104 and s["query"]["ids"] == 25
    assert s["gallery"]["images"] == 399 + 50  # junk removed, distractors kept


@pytest.mark.slow
def test_full_market_statistics(market_full):
    s = build_dataset("market1501", market_full).statistics()
    assert (s["train"]["ids"], s["train"]["images"]) == (751, 12936)
    assert (s["query"]["ids"], s["query"]["images"]) == (750, 3368)
    assert (s["gallery"]["ids"], s["gallery"]["images"]) == (751, 15913)


def test_identity_sampler_structure_and_sharding():
    pids = [i // 5 for i in range(100)] + [20, 21, 21]  # ids 0..19 with 5 images, 20 with 1, 21 with 2
    s = IdentitySampler(pids, p=4, k=4, seed=0)
    batches = s.batches()
    assert batches
    for b in batches:
        assert len(b) == 16
        ids = [pids[i] for i in b]
        assert len(set(ids)) == 4 and all(ids.count(p) == 4 for p in set(ids))
    seen_20 = []
    for epoch in range(10):  # an id with fewer than K images is drawn with replacement
        s.set_epoch(epoch)
        seen_20 += [b for b in s.batches() if any(pids[i] == 20 for i in b)]
    assert seen_20 and all(sum(pids[i] == 20 for i in b) == 4 for b in seen_20)
    s.set_epoch(0)
    s.set_epoch(1)
    assert s.batches() != batches
    full = list(IdentitySampler(pids, 4, 4, 0))
    r0 = list(IdentitySampler(pids, 4, 4, 0, rank=0, world=2))
    r1 = list(IdentitySampler(pids, 4, 4, 0, rank=1, world=2))
    assert len(r0) == len(r1) == len(full) // 2 > 0  # as many steps per epoch as one process
    for step in range(len(full) // 16):  # the two ranks' batches make up the one-process batch
        a, b = r0[8 * step:8 * step + 8], r1[8 * step:8 * step + 8]
        assert a + b == full[16 * step:16 * step + 16]
        ids_a, ids_b = {pids[i] for i in a}, {pids[i] for i in b}
        assert len(ids_a) == len(ids_b) == 2 and not ids_a & ids_b  # P / W whole identities each
    assert IdentitySampler(pids, 4, 4, 0, rank=1, world=2).batch_size == 8
    with pytest.raises(ValueError, match="identities"):
        IdentitySampler([0, 1], p=4, k=2)
    with pytest.raises(ValueError, match="data.p = 4 .* over 3 processes"):
        IdentitySampler(pids, 4, 4, 0, rank=0, world=3)
