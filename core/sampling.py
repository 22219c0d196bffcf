"""Random draws for the region policies, batched and sync-free, from an explicit generator.

- ``select_anchors``: the paper's rejection sampling ("draw regions uniformly until one scores below
  the threshold") without its loop: per image, the threshold is the tau-quantile of all candidate
  scores and one anchor is drawn uniformly among the qualifying candidates (argmax of i.i.d. uniform
  keys restricted to them). This is exactly the distribution the rejection loop converges to.
- ``sample_erasing_sizes``: Random Erasing's (Zhong et al., AAAI 2020) area/aspect draw with its
  retry loop replaced by ``attempts`` parallel draws, of which the first that fits is kept.
- ``sample_beta``: Beta(a, b) from a ``torch.Generator`` (``torch.distributions`` uses the global RNG),
  via Marsaglia-Tsang gamma draws with parallel proposals.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_maps, check_range, check_tau
from .draws import Source, normal, uniform

MODES = ("below", "above", "any")


def region_threshold(scores: torch.Tensor, tau: float, count: int | None = None) -> torch.Tensor:
    """Per-image tau-quantile (linear interpolation) of the candidate scores; NaNs are not candidates.

    Args:
        scores: ``(B, H, W)`` region scores from :func:`core.regions.region_scores`.
        count: the number of candidates (non-NaN scores) of every image, when it is the same for all
            (one region size for the batch): the quantile is then read off one sort, two kernels instead
            of ``torch.nanquantile``'s dozen, with the same value bit for bit.
    Returns:
        ``(B,)`` thresholds, same dtype as ``scores``.
    """
    check_maps(scores, "scores")
    check_tau(tau)
    if count is None:
        return torch.nanquantile(scores.flatten(1), float(tau), dim=1)
    rank = float(tau) * (count - 1)  # as nanquantile: below = floor(rank), above = ceil(rank), lerp weight
    below = math.floor(rank)
    ordered = scores.flatten(1).sort(1).values  # NaN last
    return torch.lerp(ordered[:, below], ordered[:, math.ceil(rank)], rank - below)


def candidate_mask(scores: torch.Tensor, tau: float, mode: str, count: int | None = None) -> torch.Tensor:
    """``(B, H, W)`` bool: the anchors a selective op may draw from.

    ``"below"`` (selective-cut): score < threshold; ``"above"`` (selective-paste): score > threshold;
    ``"any"``: every valid anchor (plain, non-selective ops). When no score is strictly on the required
    side (only possible with ties, e.g. constant saliency, or tau at 0 / 1), the anchors *equal* to the
    threshold qualify, so the set is never empty and the draw is still uniform over a defined set.
    ``count``: see :func:`region_threshold`.
    """
    check_choice(mode, MODES, "mode")
    if mode == "any":
        return ~torch.isnan(scores)
    thr = region_threshold(scores, tau, count)
    # No score strictly on the required side means thr is the smallest (largest) score: the anchors at that
    # edge are then exactly the tied ones, and otherwise they are among the strict ones already.
    flat = scores.flatten(1)
    if mode == "below":
        edge = flat.amin(1) if count == flat.shape[1] else flat.nan_to_num(math.inf).amin(1)
        return (scores < thr[:, None, None]) | (scores == edge[:, None, None])
    edge = flat.amax(1) if count == flat.shape[1] else flat.nan_to_num(-math.inf).amax(1)
    return (scores > thr[:, None, None]) | (scores == edge[:, None, None])


def select_anchors(candidates: torch.Tensor, generator: Source = None) -> torch.Tensor:
    """Draw one flat anchor index per image uniformly among ``candidates`` ``(B, H, W)`` -> ``(B,)``: the
    argmax of i.i.d. uniform keys, -1 outside the candidates (``generator``: see :mod:`core.draws`)."""
    keys = uniform(candidates.shape, generator, candidates.device)
    return torch.where(candidates, keys, -1.0).flatten(1).argmax(1)


def sample_erasing_sizes(
    batch: int,
    height: int,
    width: int,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    log_ratio: bool = False,
    attempts: int = 100,
    p: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per-image Random Erasing sizes ``(B, 2)`` int64; ``(0, 0)`` where nothing is erased.

    Area fraction ~ U(area), aspect r = h / w ~ U(ratio) (Zhong et al., BoT) or log-uniform
    (torchvision, ``log_ratio=True``); ``h = round(sqrt(A r))``, ``w = round(sqrt(A / r))``; a draw fits
    when ``h < H`` and ``w < W``. Images skipped by ``p`` or with no fitting draw in ``attempts`` are
    left unerased, as in the reference loop.
    """
    check_range(area, "area", 0.0, 1.0)
    check_range(ratio, "ratio", 1e-6)
    check_tau(p, "p")
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    shape = (batch, attempts)
    u_area = uniform(shape, generator, device, torch.float64)
    u_ratio = uniform(shape, generator, device, torch.float64)
    target = (area[0] + (area[1] - area[0]) * u_area) * (height * width)
    if log_ratio:
        lo, hi = math.log(ratio[0]), math.log(ratio[1])
        r = torch.exp(lo + (hi - lo) * u_ratio)
    else:
        r = ratio[0] + (ratio[1] - ratio[0]) * u_ratio
    h = torch.sqrt(target * r).round().long()
    w = torch.sqrt(target / r).round().long()
    fits = (h < height) & (w < width)
    first = fits.int().argmax(1, keepdim=True)
    apply = fits.any(1) & (uniform((batch,), generator, device) < p)
    sizes = torch.cat([h.gather(1, first), w.gather(1, first)], dim=1)
    return sizes * apply[:, None]


def sample_gamma(
    alpha: float, shape: tuple[int, ...], generator: torch.Generator | None = None,
    device: torch.device | str = "cpu", proposals: int = 16,
) -> torch.Tensor:
    """Gamma(alpha, 1) draws (float64) by Marsaglia & Tsang (2000) with ``proposals`` parallel tries.

    The acceptance rate is above 95 % for every alpha, so the chance that all 16 proposals are
    rejected is below 1e-20; alpha < 1 uses the boost ``G(a) = G(a + 1) * U^(1/a)``.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    a = alpha if alpha >= 1 else alpha + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = normal((*shape, proposals), generator, device, torch.float64)
    u = uniform((*shape, proposals), generator, device, torch.float64)
    v = (1.0 + c * z) ** 3
    log_v = torch.log(v.clamp_min(1e-300))
    ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
    first = ok.int().argmax(-1, keepdim=True)
    g = (d * v).gather(-1, first).squeeze(-1)
    if alpha < 1:
        g = g * uniform(shape, generator, device, torch.float64) ** (1.0 / alpha)
    return g


def sample_beta(
    a: float, b: float, shape: tuple[int, ...], generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Beta(a, b) draws (float64) as ``Ga / (Ga + Gb)``."""
    ga = sample_gamma(a, shape, generator, device)
    gb = sample_gamma(b, shape, generator, device)
    return ga / (ga + gb)


def sample_cutmix_sizes(
    batch: int, height: int, width: int, beta: float = 1.0, p: float = 1.0,
    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per-image CutMix box sizes ``(B, 2)``: lam ~ Beta(beta, beta), side = floor(dim * sqrt(1 - lam))
    (Yun et al., ICCV 2019); ``(0, 0)`` for images skipped by ``p``. The label weight is recomputed
    from the clipped box afterwards (:func:`core.ops.box_area_fraction`)."""
    check_tau(p, "p")
    lam = sample_beta(beta, beta, (batch,), generator, device)
    cut = torch.sqrt(1.0 - lam)
    sizes = torch.stack([(height * cut).floor(), (width * cut).floor()], dim=1).long()
    apply = uniform((batch,), generator, device) < p
    return sizes * apply[:, None]
