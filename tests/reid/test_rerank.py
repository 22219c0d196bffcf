"""The vectorised k-reciprocal re-ranking (`reid.rerank.re_ranking`) against the per-image reference loop
(`re_ranking_reference`): same (Q, G) float32 distances to 1e-5 on random, clustered and tied features."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.rerank import re_ranking, re_ranking_reference

ATOL = 1e-5


def random_feats(q, g, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(q, dim, generator=gen), dim=1),
            F.normalize(torch.randn(g, dim, generator=gen), dim=1))


def clustered_feats(q, g, dim, clusters, noise, seed):
    """Features around a few centres: k-reciprocal sets are large and the 2/3-overlap expansion adds
    members outside each image's k1 + 1 nearest."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=gen) * 2
    pick = lambda m: centres[torch.randint(0, clusters, (m,), generator=gen)]  # noqa: E731
    return (F.normalize(pick(q) + noise * torch.randn(q, dim, generator=gen), dim=1),
            F.normalize(pick(g) + noise * torch.randn(g, dim, generator=gen), dim=1))


def check(q, g, **kw):
    ref = re_ranking_reference(q, g, **{k: v for k, v in kw.items() if k not in ("budget", "device")})
    got = re_ranking(q, g, **kw)
    assert got.shape == ref.shape == (len(q), len(g))
    assert got.dtype == ref.dtype == np.float32
    assert np.isfinite(got).all()
    err = np.abs(got - ref).max()
    assert err <= ATOL, err
    return got


@pytest.mark.parametrize("k1,k2,lam,seed", [(20, 6, 0.3, 0), (20, 6, 0.3, 1), (20, 1, 0.3, 2), (5, 3, 0.3, 3),
                                             (3, 2, 0.0, 4)])
def test_random_features_match_reference(k1, k2, lam, seed):
    q, g = random_feats(50, 300, 32, seed)
    check(q, g, k1=k1, k2=k2, lambda_value=lam)


@pytest.mark.parametrize("k1,k2", [(20, 6), (10, 3), (20, 1)])
def test_clustered_features_match_reference(k1, k2):
    q, g = clustered_feats(60, 300, 16, 8, 0.7, seed=k1 + k2)
    check(q, g, k1=k1, k2=k2, lambda_value=0.3)


def test_small_blocks_and_budget_match_reference():
    """Many row blocks and tiny sparse chunks (every chunked loop runs several times)."""
    q, g = clustered_feats(30, 120, 16, 4, 1.0, seed=3)
    got = check(q, g, k1=20, k2=6, lambda_value=0.3, block=32)
    assert np.allclose(re_ranking(q, g, 20, 6, 0.3, block=32, budget=500), got, atol=1e-6, rtol=0)


@pytest.mark.parametrize("k1,k2", [(20, 6), (5, 3), (3, 1)])
def test_duplicate_rows_and_ties_match_reference(k1, k2):
    gen = torch.Generator().manual_seed(0)
    base = F.normalize(torch.randn(40, 16, generator=gen), dim=1)
    q = base[torch.randint(0, 40, (30,), generator=gen)]  # every query also appears in the gallery
    g = torch.cat([base, base[torch.randint(0, 40, (160,), generator=gen)]])
    check(q, g, k1=k1, k2=k2, lambda_value=0.3)


@pytest.mark.parametrize("k1,k2", [(4, 2), (6, 3), (2, 1)])
def test_exact_ties_on_a_grid_match_reference(k1, k2):
    q = torch.tensor([[0.0, 0], [1, 0], [0, 1]])
    g = torch.tensor([[1.0, 1], [2, 0], [0, 2], [1, 0], [0, 0], [1, 1], [2, 2], [0, 1]]).repeat(3, 1)
    check(q, g, k1=k1, k2=k2, lambda_value=0.3)


def test_public_name_and_defaults():
    """`re_ranking` keeps the reference's signature (engine calls it positionally) and defaults."""
    q, g = random_feats(20, 80, 8, seed=5)
    ref = re_ranking_reference(q, g)
    assert np.abs(re_ranking(q, g) - ref).max() <= ATOL
    assert np.abs(re_ranking(q, g, 20, 6, 0.3, device="cpu") - ref).max() <= ATOL
    assert np.abs(re_ranking(q.double(), g.double()) - ref).max() <= ATOL


@pytest.mark.cuda
def test_cuda_matches_reference():
    q, g = clustered_feats(60, 300, 16, 8, 0.7, seed=7)
    ref = re_ranking_reference(q, g)
    for got in (re_ranking(q.cuda(), g.cuda()), re_ranking(q, g, device="cuda")):
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.abs(got - ref).max() <= ATOL
