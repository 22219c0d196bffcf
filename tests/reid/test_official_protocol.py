"""Our evaluator (pids / cameras, junk dropped at load) against the official Market-1501 protocol
(``gt_query/<query>_good.mat`` / ``_junk.mat``, 1-based indices into ``bounding_box_test`` sorted by
name, every ``-1`` gallery image junk too) on one fixed random distance matrix over the full data."""

from pathlib import Path

import numpy as np
import pytest

from reid.datasets import build_dataset
from reid.metrics import evaluate_market


def official_metrics(dist_full: np.ndarray, good: list[np.ndarray], junk: list[np.ndarray]) -> tuple[float, float]:
    r1, aps = [], []
    for i in range(dist_full.shape[0]):
        order = np.argsort(dist_full[i], kind="stable")
        order = order[~np.isin(order, junk[i])]
        hit = np.isin(order, good[i])
        positions = np.flatnonzero(hit)
        r1.append(hit[0])
        aps.append(np.mean(np.arange(1, len(positions) + 1) / (positions + 1)))
    return 100 * float(np.mean(r1)), 100 * float(np.mean(aps))


@pytest.mark.slow
def test_evaluator_agrees_with_official_indices(market_full):
    from scipy.io import loadmat

    ds = build_dataset("market1501", market_full)
    root = Path(ds.root)
    all_gallery = sorted(p.name for p in (root / "bounding_box_test").iterdir() if p.suffix == ".jpg")
    minus_one = np.array([k for k, n in enumerate(all_gallery) if n.startswith("-1")])
    kept = np.array([k for k, n in enumerate(all_gallery) if not n.startswith("-1")])
    assert len(kept) == len(ds.gallery) == 15913
    rng = np.random.default_rng(0)
    dist_full = rng.random((len(ds.query), len(all_gallery)), dtype=np.float32)
    good, junk = [], []
    for path, _, _ in ds.query:
        stem = Path(path).name.split(".jpg")[0]
        good.append(loadmat(root / "gt_query" / f"{stem}_good.mat")["good_index"].ravel() - 1)
        official_junk = loadmat(root / "gt_query" / f"{stem}_junk.mat")["junk_index"].ravel() - 1
        junk.append(np.union1d(official_junk, minus_one))
    r1_official, map_official = official_metrics(dist_full, good, junk)
    ours = evaluate_market(dist_full[:, kept], [p for _, p, _ in ds.query], [p for _, p, _ in ds.gallery],
                           [c for _, _, c in ds.query], [c for _, _, c in ds.gallery])
    assert ours["valid_queries"] == 3368
    assert ours["rank1"] == pytest.approx(r1_official, abs=1e-9)
    assert ours["mAP"] == pytest.approx(map_official, abs=1e-9)
