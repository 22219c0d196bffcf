"""Re-ID evaluation: distances, CMC rank-k, mAP and mINP with the Market-1501 protocol
(BoT ``eval_func`` / fast-reid ``eval_market1501``): per query, gallery images with the same id **and**
the same camera are removed; queries left without a positive are skipped."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def distance_matrix(query: torch.Tensor, gallery: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """``(Q, G)`` distances: ``cosine`` = 1 - cos (features L2-normalised), or ``euclidean`` (squared)."""
    if metric == "cosine":
        return 1 - F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).T
    if metric == "euclidean":
        return (query * query).sum(1, keepdim=True) + (gallery * gallery).sum(1)[None] - 2 * query @ gallery.T
    raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")


def evaluate_market(dist: np.ndarray, q_pids, g_pids, q_cams, g_cams, max_rank: int = 50) -> dict:
    """CMC (rank-1/5/10), mAP and mINP in percent, plus the number of valid queries."""
    dist, q_pids, g_pids, q_cams, g_cams = map(np.asarray, (dist, q_pids, g_pids, q_cams, g_cams))
    order = np.argsort(dist, axis=1, kind="stable")
    matches = g_pids[order] == q_pids[:, None]
    cmc_sum, aps, inps = np.zeros(max_rank), [], []
    for i in range(len(q_pids)):
        keep = ~((g_pids[order[i]] == q_pids[i]) & (g_cams[order[i]] == q_cams[i]))
        hit = matches[i][keep]
        if not hit.any():
            continue
        cmc = hit.cumsum().clip(max=1)
        cmc_sum += np.pad(cmc[:max_rank], (0, max(0, max_rank - len(cmc))), mode="edge")
        positions = np.flatnonzero(hit)
        precision = np.arange(1, len(positions) + 1) / (positions + 1)
        aps.append(precision.mean())
        inps.append(len(positions) / (positions[-1] + 1))
    if not aps:
        raise ValueError("no query has a valid match in the gallery")
    cmc = cmc_sum / len(aps)
    return {**{f"rank{k}": 100 * float(cmc[min(k, max_rank) - 1]) for k in (1, 5, 10)},
            "mAP": 100 * float(np.mean(aps)), "mINP": 100 * float(np.mean(inps)), "valid_queries": len(aps)}
