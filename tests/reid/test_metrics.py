import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.losses import CenterLoss, batch_hard_triplet, smooth_cross_entropy
from reid.metrics import distance_matrix, evaluate_market
from reid.rerank import re_ranking


def test_smooth_ce_hand_computed():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    p = torch.softmax(logits, 1)[0]
    eps = 0.1
    expected = -((1 - eps + eps / 3) * p[0].log() + eps / 3 * p[1].log() + eps / 3 * p[2].log())
    assert torch.allclose(smooth_cross_entropy(logits, torch.tensor([0]), eps), expected)
    plain = F.cross_entropy(logits, torch.tensor([0]))
    assert torch.allclose(smooth_cross_entropy(logits, torch.tensor([0]), 0.0), plain)


def test_batch_hard_triplet_hand_computed():
    f = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest pos d(0,1)=3, hardest neg d(0,2)=1 -> 3-1+0.3 = 2.3
    # anchor 1: pos 3, neg min(d(1,2)=sqrt(10), d(1,3)=sqrt(34)) -> 3 - 3.1623 + 0.3 = 0.1377
    # anchor 2: pos d(2,3)=4, neg min(1, sqrt(10)) = 1 -> 3.3 ; anchor 3: pos 4, neg min(5, sqrt(34)) = 5 -> 0
    expected = (2.3 + (3 - 10 ** 0.5 + 0.3) + 3.3 + 0.0) / 4
    assert torch.allclose(batch_hard_triplet(f, y, 0.3), torch.tensor(expected), atol=1e-5)


def test_center_loss_hand_computed():
    loss = CenterLoss(2, 2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    f = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    assert torch.allclose(loss(f, torch.tensor([0, 1])), torch.tensor((1.0 + 4.0) / 2))


def brute_force_eval(dist, qp, gp, qc, gc):
    """Direct definition: for each query rank the kept gallery (same id *and* camera removed); CMC@k = the
    share of valid queries with a true match in the top k; AP = the mean precision at the hits; INP = the
    number of true matches over the rank of the last one (Ye et al. 2021)."""
    ranks = (1, 5, 10)
    cmc, aps, inps = {k: [] for k in ranks}, [], []
    for i in range(len(qp)):
        kept = [j for j in range(len(gp)) if not (gp[j] == qp[i] and gc[j] == qc[i])]
        kept.sort(key=lambda j: (dist[i][j], j))
        hits = [gp[j] == qp[i] for j in kept]
        if not any(hits):
            continue
        for k in ranks:
            cmc[k].append(any(hits[:k]))
        found, precisions, last = 0, [], 0
        for rank, h in enumerate(hits, 1):
            if h:
                found += 1
                precisions.append(found / rank)
                last = rank
        aps.append(sum(precisions) / len(precisions))
        inps.append(found / last)
    return {**{f"rank{k}": 100 * np.mean(cmc[k]) for k in ranks}, "mAP": 100 * np.mean(aps),
            "mINP": 100 * np.mean(inps), "valid_queries": len(aps)}


@pytest.mark.parametrize("seed,n_ids", [(0, 6), (1, 3), (2, 20)])
def test_evaluator_matches_brute_force(seed, n_ids):
    rng = np.random.default_rng(seed)
    qp, gp = rng.integers(0, n_ids, 15), rng.integers(0, n_ids, 60)
    qc, gc = rng.integers(0, 3, 15), rng.integers(0, 3, 60)
    dist = rng.random((15, 60))
    dist[:, ::7] = dist[:, 1:2]  # ties: broken by gallery order in both
    got = evaluate_market(dist, qp, gp, qc, gc, max_rank=10)
    ref = brute_force_eval(dist, qp, gp, qc, gc)
    assert got["valid_queries"] == ref.pop("valid_queries")
    for key, value in ref.items():
        assert got[key] == pytest.approx(value), key
    assert got["rank1"] <= got["rank5"] <= got["rank10"] and 0 < got["mINP"] <= got["mAP"] + 1e-9
    if n_ids == 6:  # a case where the rank-k values differ (3 ids: all 100 at rank 10; 20 ids: rank-1 is 0)
        assert 0 < got["rank1"] < got["rank5"] < got["rank10"] < 100


def test_cmc_beyond_the_gallery_size():
    """A gallery shorter than max_rank: CMC@k saturates at the last rank instead of reading past it."""
    dist = np.array([[0.3, 0.1, 0.2], [0.1, 0.2, 0.3]])
    got = evaluate_market(dist, [1, 2], [2, 3, 1], [0, 0], [1, 1, 1], max_rank=10)
    ref = brute_force_eval(dist, [1, 2], [2, 3, 1], [0, 0], [1, 1, 1])
    assert got["rank5"] == got["rank10"] == 100 and got["rank1"] == ref["rank1"] == 50
    assert got["mINP"] == pytest.approx(ref["mINP"]) and got["mAP"] == pytest.approx(ref["mAP"])


def test_perfect_ranking_and_no_valid_query():
    dist = np.array([[0.1, 0.9, 0.5]])
    got = evaluate_market(dist, [1], [1, 2, 1], [0], [1, 1, 1], max_rank=3)
    assert got["rank1"] == 100 and got["mAP"] == 100
    with pytest.raises(ValueError, match="no query"):
        evaluate_market(dist, [1], [1, 2, 1], [0], [0, 1, 0], max_rank=3)


def test_distance_matrix():
    q, g = torch.randn(3, 8), torch.randn(5, 8)
    cos = distance_matrix(q, g, "cosine")
    assert torch.allclose(cos, 1 - F.cosine_similarity(q[:, None], g[None], dim=2), atol=1e-6)
    assert torch.allclose(distance_matrix(q, g, "euclidean"), torch.cdist(q, g) ** 2, atol=1e-4)


def dense_re_ranking(q, g, k1=20, k2=6, lam=0.3):
    """The original dense algorithm (Zhong et al. 2017), written out with full matrices."""
    feats = torch.cat([q, g]).double().numpy()
    nq, n = len(q), len(feats)
    d = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    d = (d / d.max(axis=0)).T
    rank = np.argsort(d, axis=1, kind="stable")
    V = np.zeros((n, n))
    for i in range(n):
        fwd = rank[i, :k1 + 1]
        recip = fwd[np.where(rank[fwd, :k1 + 1] == i)[0]]
        exp_idx = recip
        for c in recip:
            cf = rank[c, :int(np.around(k1 / 2)) + 1]
            cr = cf[np.where(rank[cf, :int(np.around(k1 / 2)) + 1] == c)[0]]
            if len(np.intersect1d(cr, recip)) > 2 / 3 * len(cr):
                exp_idx = np.append(exp_idx, cr)
        exp_idx = np.unique(exp_idx)
        w = np.exp(-d[i, exp_idx])
        V[i, exp_idx] = w / w.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.zeros((nq, n))
    for i in range(nq):
        m = np.minimum(V[i][None], V).sum(1)
        jac[i] = 1 - m / (2 - m)
    return jac[:, nq:] * (1 - lam) + d[:nq, nq:] * lam


def test_re_ranking_matches_dense_reference():
    torch.manual_seed(0)
    centers = torch.randn(8, 16) * 3
    pid_q, pid_g = torch.arange(8).repeat(2), torch.arange(8).repeat(6)
    q = F.normalize(centers[pid_q] + torch.randn(16, 16), dim=1)
    g = F.normalize(centers[pid_g] + torch.randn(48, 16), dim=1)
    got = re_ranking(q, g, k1=6, k2=3, lambda_value=0.3, block=10)
    ref = dense_re_ranking(q, g, 6, 3, 0.3)
    assert got.shape == (16, 48)
    assert np.allclose(got, ref, atol=1e-4)
