"""Mutation check of the core tests (issue #21): plant a bug in ``core``, run the test files that should
notice it, and report whether they did.

Each mutant stands for a one-line source edit. It is applied by monkeypatching in a fresh subprocess
before pytest imports the tests: either every binding of a ``core`` function (the function itself is
wrong, wherever it is imported from) or one binding only (``scope="binding"``: e.g. the
``selective_boxes`` that ``core/keep.py`` calls, so only the ``KeepAugment`` code path is wrong). A mutant is
*killed* when its test files fail (pytest exit code 1), *survived* when they pass; anything else (a
collection error, a timeout) is an *error*.

Usage::

    python tests/mutants.py                      # every mutant, a table and the total
    python tests/mutants.py --only keep_cutout_above ops_erase_identity --jobs 2
    python tests/mutants.py --root /tmp/orig     # against another copy of tests/ (e.g. the files at HEAD)
    python tests/mutants.py --list

``make mutants`` runs the first form.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]

KEEP = "tests/core/test_keep.py"
SAMPLING = "tests/core/test_sampling.py"
OPS = "tests/core/test_ops.py"
REGIONS = "tests/core/test_regions.py"
COMPOSE = "tests/core/test_compose.py"
CHECKS = "tests/core/test_checks.py"
LOW_RES = "tests/core/test_low_res.py"
SALIENCY = "tests/core/test_saliency.py"


@dataclass(frozen=True)
class Mutant:
    """``make(original)`` returns the replacement of ``target`` (``"module:attr"`` or ``"module:Class.attr"``)."""

    name: str
    target: str
    make: Callable
    files: tuple[str, ...]
    what: str
    scope: str = "everywhere"  # or "binding": patch only the named module's attribute
    issue: bool = field(default=False)  # named in issue #21


# ----------------------------------------------------------------------------------------------- factories


def _caller_op() -> str | None:
    """The ``op`` of the nearest KeepAugment method up the stack (the one whose step is being mutated)."""
    from core.keep import KeepAugment

    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, KeepAugment):
            return owner.op
        frame = frame.f_back
    return None


def _with_arguments(original, **changes) -> Callable:
    """``original`` called with some of its arguments replaced (``name=value``, or ``name=fn(value)``)."""
    signature = inspect.signature(original)

    def mutant(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        for k, v in changes.items():
            bound.arguments[k] = v(bound.arguments[k]) if callable(v) else v
        return original(*bound.args, **bound.kwargs)

    return mutant


def _selective_mode(op: str, mode: str | None = None, tau: float | None = None) -> Callable:
    """``selective_boxes`` as seen from ``core/keep.py``: for ``op`` ("*": any), force ``mode`` and / or ``tau``."""

    def make(original):
        changes = {k: v for k, v in (("mode", mode), ("tau", tau)) if v is not None}
        changed = _with_arguments(original, **changes)

        def mutant(*args, **kwargs):
            if op == "*" or _caller_op() == op:
                return changed(*args, **kwargs)
            return original(*args, **kwargs)

        return mutant

    return make


def _keep_region_score_sum(original):
    return _with_arguments(original, score="sum")


def _identity_first(original):
    def mutant(x, *args, **kwargs):
        return x.clone()

    return mutant


def _cutmix_no_partner(original):
    def mutant(x, boxes, perm):
        return original(x, boxes, perm.sort().values)  # every image "mixed" with itself

    return mutant


def _paste_nothing(original):
    def mutant(x_aug, x_clean, boxes):
        return x_aug.clone()

    return mutant


def _mask_xy_swapped(original):
    def mutant(boxes, height, width):
        import torch

        ys = torch.arange(height, device=boxes.device)[None, :, None]
        xs = torch.arange(width, device=boxes.device)[None, None, :]
        x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
        return ((xs >= y1) & (xs < y2) & (ys >= x1) & (ys < x2))[:, None]

    return mutant


def _mix_targets_lam_swapped(original):
    def mutant(target, perm, lam, num_classes=None):
        return original(target, perm, 1.0 - lam, num_classes)

    return mutant


def _threshold_median(original):
    def mutant(scores, tau, count=None):
        return original(scores, 0.5, count)

    return mutant


def _candidates_any(original):
    def mutant(scores, tau, mode, count=None):
        return original(scores, tau, "any", count)

    return mutant


def _candidates_no_tie_fallback(original):
    def mutant(scores, tau, mode, count=None):
        import torch

        if mode == "any":
            return original(scores, tau, mode, count)
        thr = torch.nanquantile(scores.flatten(1), float(tau), dim=1)[:, None, None]
        return scores < thr if mode == "below" else scores > thr

    return mutant


def _anchors_first(original):
    def mutant(candidates, generator=None):
        return candidates.flatten(1).int().argmax(1)

    return mutant


def _anchors_ignore_mask(original):
    def mutant(candidates, generator=None):
        return original(candidates | True, generator)

    return mutant


def _erasing(**forced) -> Callable:
    """``sample_erasing_sizes`` with some arguments replaced: values, or functions of the given ones."""
    return lambda original: _with_arguments(original, **forced)


def _erasing_sides_swapped(original):
    def mutant(*args, **kwargs):
        return original(*args, **kwargs).flip(1)

    return mutant


def _beta_constant(value: float) -> Callable:
    def make(original):
        def mutant(a, b, shape, generator=None, device="cpu"):
            import torch

            original(a, b, shape, generator, device)  # same generator consumption
            return torch.full(shape, value, dtype=torch.float64, device=device)

        return mutant

    return make


def _beta_fixed(a_: float, b_: float) -> Callable:
    def make(original):
        def mutant(a, b, shape, generator=None, device="cpu"):
            return original(a_, b_, shape, generator, device)

        return mutant

    return make


def _beta_swapped(original):
    def mutant(a, b, shape, generator=None, device="cpu"):
        return original(b, a, shape, generator, device)

    return mutant


def _gamma_no_boost(original):
    def mutant(alpha, shape, generator=None, device="cpu", proposals=16):
        return original(alpha + 1.0 if alpha < 1 else alpha, shape, generator, device, proposals)

    return mutant


def _gamma_no_rejection(original):
    def mutant(alpha, shape, generator=None, device="cpu", proposals=16):
        return original(alpha, shape, generator, device, 1)  # the first proposal, accepted or not

    return mutant


def _cutmix_side_linear(original):
    def mutant(batch, height, width, beta=1.0, p=1.0, generator=None, device="cpu"):
        import torch

        from core.sampling import sample_beta

        lam = sample_beta(beta, beta, (batch,), generator, device)
        sizes = torch.stack([(height * (1 - lam)).floor(), (width * (1 - lam)).floor()], dim=1).long()
        apply = torch.rand(batch, generator=generator, device=device) < p
        return sizes * apply[:, None]

    return mutant


def _cutmix_p_ignored(original):
    def mutant(batch, height, width, beta=1.0, p=1.0, generator=None, device="cpu"):
        return original(batch, height, width, beta, 1.0, generator, device)

    return mutant


def _as_sizes_swapped(original):
    def mutant(size, batch, device):
        return original(size, batch, device).flip(1)

    return mutant


def _noop(original):
    def mutant(*args, **kwargs):
        return None

    return mutant


def _parse_size_square(original):
    def mutant(size, name="size"):
        out = original(size, name)
        return out if not isinstance(out, tuple) else (out[0], out[0])

    return mutant


def _random_boxes_fixed_corner(original):
    def mutant(batch, height, width, size, placement="clip", generator=None, device="cpu"):
        import torch

        from core.regions import anchor_boxes
        from core.sizes import as_sizes

        original(batch, height, width, size, placement, generator, device)  # checks, generator use
        anchor = torch.zeros(batch, dtype=torch.long, device=device)
        return anchor_boxes(anchor, as_sizes(size, batch, torch.device(device)), height, width, placement)

    return mutant


def _random_boxes_inside_overflow(original):
    def mutant(batch, height, width, size, placement="clip", generator=None, device="cpu"):
        import torch

        from core.regions import anchor_boxes
        from core.sizes import as_sizes

        if placement != "inside":
            return original(batch, height, width, size, placement, generator, device)
        u = torch.rand((batch, 2), generator=generator, device=device, dtype=torch.float64)
        anchor = (u[:, 0] * height).long() * width + (u[:, 1] * width).long()  # any top-left corner
        return anchor_boxes(anchor, as_sizes(size, batch, torch.device(device)), height, width, placement)

    return mutant


class _FunctionalProxy:
    """``torch.nn.functional`` with ``interpolate`` rewritten by ``fix(kwargs) -> kwargs``."""

    def __init__(self, module, fix):
        self._module, self._fix = module, fix

    def __getattr__(self, name):
        return getattr(self._module, name)

    def interpolate(self, *args, **kwargs):
        return self._module.interpolate(*args, **self._fix(kwargs))


def _upsample(mode: str) -> Callable:
    def fix(kwargs):
        if kwargs.get("mode") == "bilinear":
            kwargs = dict(kwargs, mode=mode)
            if mode == "nearest":
                kwargs.pop("align_corners", None)
        return kwargs

    return lambda original: _FunctionalProxy(original, fix)


def _upsample_align_corners(original):
    def fix(kwargs):
        return dict(kwargs, align_corners=True) if kwargs.get("mode") == "bilinear" else kwargs

    return _FunctionalProxy(original, fix)


def _downscale(mode: str) -> Callable:
    def make(original):
        def mutant(x, factor):
            import torch.nn.functional as F

            if factor == 1.0:
                return x
            size = (max(1, round(x.shape[2] * factor)), max(1, round(x.shape[3] * factor)))
            kwargs = {} if mode in ("nearest", "area") else dict(align_corners=False)
            return F.interpolate(x, size=size, mode=mode, **kwargs)

        return mutant

    return make


# ------------------------------------------------------------------------------------------------- mutants

_KEEP_FILES = (KEEP, COMPOSE)
_SAMPLER_FILES = (SAMPLING, KEEP)

MUTANTS: tuple[Mutant, ...] = (
    # selective ops choose the wrong side of the threshold (one per op), or ignore the saliency
    Mutant("keep_cutout_above", "core.keep:selective_boxes", _selective_mode("cutout", "above"), _KEEP_FILES,
           "KeepAugment cutout cuts above the threshold", "binding"),
    Mutant("keep_erasing_above", "core.keep:selective_boxes", _selective_mode("erasing", "above"), _KEEP_FILES,
           "KeepAugment erasing erases above the threshold", "binding", True),
    Mutant("keep_cutmix_above", "core.keep:selective_boxes", _selective_mode("cutmix", "above"), _KEEP_FILES,
           "KeepAugment cutmix cuts above the threshold", "binding", True),
    Mutant("keep_paste_below", "core.keep:selective_boxes", _selective_mode("paste", "below"), _KEEP_FILES,
           "KeepAugment paste pastes below the threshold", "binding"),
    Mutant("keep_erasing_any", "core.keep:selective_boxes", _selective_mode("erasing", "any"), _KEEP_FILES,
           "KeepAugment erasing ignores the saliency", "binding"),
    Mutant("keep_cutmix_any", "core.keep:selective_boxes", _selective_mode("cutmix", "any"), _KEEP_FILES,
           "KeepAugment cutmix ignores the saliency", "binding"),
    Mutant("keep_tau_ignored", "core.keep:selective_boxes", _selective_mode("*", tau=0.6), _KEEP_FILES,
           "KeepAugment always thresholds at tau = 0.6", "binding"),
    Mutant("keep_region_score_ignored", "core.keep:selective_boxes", _keep_region_score_sum, _KEEP_FILES,
           "KeepAugment scores regions by the sum whatever region_score says", "binding"),
    # the deterministic step
    Mutant("ops_erase_identity", "core.ops:erase", _identity_first, _KEEP_FILES,
           "ops.erase returns its input, as KeepAugment calls it", "binding", True),
    Mutant("ops_erase_identity_everywhere", "core.ops:erase", _identity_first, (OPS, *_KEEP_FILES),
           "ops.erase returns its input, everywhere"),
    Mutant("ops_cutout_identity", "core.ops:cutout", _identity_first, (OPS, *_KEEP_FILES),
           "ops.cutout returns its input"),
    Mutant("ops_cutmix_no_partner", "core.ops:cutmix", _cutmix_no_partner, (OPS, *_KEEP_FILES),
           "ops.cutmix mixes each image with itself"),
    Mutant("ops_paste_nothing", "core.ops:paste", _paste_nothing, (OPS, *_KEEP_FILES),
           "ops.paste returns the augmented image"),
    Mutant("ops_mask_xy_swapped", "core.ops:boxes_to_mask", _mask_xy_swapped, (OPS, *_KEEP_FILES),
           "boxes_to_mask swaps x and y"),
    Mutant("ops_mix_targets_lam_swapped", "core.ops:mix_targets", _mix_targets_lam_swapped, (OPS, *_KEEP_FILES),
           "mix_targets weighs the partner's label by lam"),
    # core/sampling.py
    Mutant("region_threshold_median", "core.sampling:region_threshold", _threshold_median, (*_SAMPLER_FILES, COMPOSE),
           "region_threshold ignores tau (median)"),
    Mutant("candidate_mask_any", "core.sampling:candidate_mask", _candidates_any, (*_SAMPLER_FILES, COMPOSE),
           "candidate_mask ignores the mode"),
    Mutant("candidate_mask_no_tie_fallback", "core.sampling:candidate_mask", _candidates_no_tie_fallback,
           (*_SAMPLER_FILES, COMPOSE), "candidate_mask may be empty (no fallback to ties)"),
    Mutant("select_anchors_first", "core.sampling:select_anchors", _anchors_first, (*_SAMPLER_FILES, COMPOSE),
           "select_anchors takes the first candidate"),
    Mutant("select_anchors_ignore_mask", "core.sampling:select_anchors", _anchors_ignore_mask,
           (*_SAMPLER_FILES, COMPOSE), "select_anchors draws among all anchors"),
    Mutant("erasing_area_constant", "core.sampling:sample_erasing_sizes",
           _erasing(area=lambda a: ((a[0] + a[1]) / 2,) * 2), _SAMPLER_FILES,
           "Random Erasing area constant (the middle of its range)", issue=True),
    Mutant("erasing_ratio_constant", "core.sampling:sample_erasing_sizes",
           _erasing(ratio=lambda r: ((r[0] + r[1]) / 2,) * 2), _SAMPLER_FILES,
           "Random Erasing aspect ratio constant (the middle of its range)", issue=True),
    Mutant("erasing_log_ratio_ignored", "core.sampling:sample_erasing_sizes", _erasing(log_ratio=False),
           _SAMPLER_FILES, "Random Erasing ignores log_ratio=True", issue=True),
    Mutant("erasing_log_ratio_always", "core.sampling:sample_erasing_sizes", _erasing(log_ratio=True),
           _SAMPLER_FILES, "Random Erasing always draws a log-uniform ratio"),
    Mutant("erasing_p_ignored", "core.sampling:sample_erasing_sizes", _erasing(p=1.0), _SAMPLER_FILES,
           "Random Erasing ignores p"),
    Mutant("erasing_sides_swapped", "core.sampling:sample_erasing_sizes", _erasing_sides_swapped, _SAMPLER_FILES,
           "Random Erasing returns (w, h)"),
    Mutant("gamma_no_boost", "core.sampling:sample_gamma", _gamma_no_boost, _SAMPLER_FILES,
           "sample_gamma draws Gamma(alpha + 1) for alpha < 1"),
    Mutant("gamma_no_rejection", "core.sampling:sample_gamma", _gamma_no_rejection, _SAMPLER_FILES,
           "sample_gamma keeps its first Marsaglia-Tsang proposal"),
    Mutant("beta_swapped", "core.sampling:sample_beta", _beta_swapped, _SAMPLER_FILES, "sample_beta draws Beta(b, a)"),
    Mutant("cutmix_lambda_half", "core.sampling:sample_beta", _beta_constant(0.5), _SAMPLER_FILES,
           "CutMix lambda constant 0.5", "binding", True),
    Mutant("cutmix_lambda_beta55", "core.sampling:sample_beta", _beta_fixed(5.0, 5.0), _SAMPLER_FILES,
           "CutMix lambda ~ Beta(5, 5)", "binding", True),
    Mutant("cutmix_beta_ignored", "core.sampling:sample_beta", _beta_fixed(1.0, 1.0), _SAMPLER_FILES,
           "CutMix lambda ~ Beta(1, 1) whatever beta", "binding"),
    Mutant("cutmix_side_linear", "core.sampling:sample_cutmix_sizes", _cutmix_side_linear, _SAMPLER_FILES,
           "CutMix side = dim * (1 - lam) instead of dim * sqrt(1 - lam)"),
    Mutant("cutmix_p_ignored", "core.sampling:sample_cutmix_sizes", _cutmix_p_ignored, _SAMPLER_FILES,
           "CutMix ignores p"),
    # core/policy.py: the plain ops' sampler
    Mutant("random_boxes_fixed_corner", "core.policy:random_boxes", _random_boxes_fixed_corner,
           (SAMPLING, KEEP, COMPOSE), "plain ops always take anchor 0"),
    Mutant("random_boxes_inside_overflow", "core.policy:random_boxes", _random_boxes_inside_overflow,
           (SAMPLING, KEEP, COMPOSE), "plain Random Erasing boxes may leave the image (then clipped)"),
    # core/sizes.py
    Mutant("as_sizes_swapped", "core.sizes:as_sizes", _as_sizes_swapped, (REGIONS, *_SAMPLER_FILES),
           "as_sizes returns (w, h)"),
    Mutant("check_sizes_fit_noop", "core.sizes:check_sizes_fit", _noop, (REGIONS, KEEP, CHECKS),
           "check_sizes_fit checks nothing"),
    Mutant("parse_size_square", "core.sizes:parse_size", _parse_size_square, (REGIONS, KEEP, CHECKS),
           "parse_size turns (h, w) into (h, h)"),
    # low-resolution saliency
    Mutant("low_res_nearest_upsampling", "core.saliency:F", _upsample("nearest"), (LOW_RES, SALIENCY),
           "low-res saliency mapped back with nearest upsampling", "binding", True),
    Mutant("low_res_bicubic_upsampling", "core.saliency:F", _upsample("bicubic"), (LOW_RES, SALIENCY),
           "low-res saliency mapped back with bicubic upsampling", "binding"),
    Mutant("low_res_align_corners", "core.saliency:F", _upsample_align_corners, (LOW_RES, SALIENCY),
           "low-res saliency mapped back with align_corners=True", "binding"),
    Mutant("low_res_bilinear_downscale", "core.saliency:downscale", _downscale("bilinear"), (LOW_RES, SALIENCY),
           "low-res input downscaled bilinearly instead of bicubically"),
    Mutant("low_res_area_downscale", "core.saliency:downscale", _downscale("area"), (LOW_RES, SALIENCY),
           "low-res input downscaled by area averaging instead of bicubically"),
)

# not part of the check: a mutant that changes nothing (its tests must pass: the harness does not invent kills)
EXTRA: tuple[Mutant, ...] = (
    Mutant("null_unchanged", "core.ops:cutout", lambda original: _with_arguments(original), (OPS,),
           "nothing changed (must survive)"),
)


# ------------------------------------------------------------------------------------------------ applying


def resolve(target: str):
    """``(owner, attribute name, value)`` of ``"module:attr"`` / ``"module:Class.attr"``."""
    module_name, _, path = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for p in parents:
        owner = getattr(owner, p)
    return owner, name, getattr(owner, name)


def apply(mutant: Mutant) -> None:
    """Plant ``mutant`` in this process (before the tests import ``core``)."""
    importlib.import_module("core")
    owner, name, original = resolve(mutant.target)
    replacement = mutant.make(original)
    if mutant.scope == "binding":
        setattr(owner, name, replacement)
        return
    if mutant.scope != "everywhere":
        raise ValueError(f"{mutant.name}: scope must be 'binding' or 'everywhere', got {mutant.scope!r}")
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "core" or module_name.startswith("core.")):
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, replacement)


@dataclass
class Result:
    mutant: Mutant
    status: str  # killed / survived / error
    seconds: float
    detail: str = ""


def _files(mutant: Mutant, root: Path) -> list[str]:
    return [f for f in mutant.files if (root / f).exists()]


def run(mutant: Mutant, root: Path = REPO, timeout: float = 600, files: list[str] | None = None) -> Result:
    """Run the mutant's test files (or ``files``) under it in a subprocess."""
    files = _files(mutant, root) if files is None else files
    if not files:
        return Result(mutant, "error", 0.0, "none of its test files exists")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--apply", mutant.name, "--root", str(root), *files]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(mutant, "error", time.perf_counter() - start, f"timeout after {timeout:.0f} s")
    seconds = time.perf_counter() - start
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    status = {0: "survived", 1: "killed"}.get(proc.returncode, "error")
    failed = next((ln.split(" - ")[0].replace("FAILED ", "") for ln in lines if ln.startswith("FAILED ")), "")
    return Result(mutant, status, seconds, failed or f"rc={proc.returncode}: {last}")


# Slow tests run last, so a mutant another test kills stops (-x) before them.
SLOW_LAST = frozenset({
    "test_distribution_matches_rejection_sampling", "test_sum_scores_favour_small_border_boxes_and_mean_does_not",
    "test_torchvision_and_timm_models", "test_bf16_pass_ranks_regions_like_float32",
    "test_selective_cut_draws_uniformly_among_the_all_zero_boxes",
})


class _SlowLast:
    def pytest_collection_modifyitems(self, items):
        items.sort(key=lambda item: getattr(item, "originalname", item.name) in SLOW_LAST)


def _child(name: str, root: Path, files: list[str]) -> int:
    """In the subprocess: plant the mutant, then run pytest on ``files`` (stop at the first failure)."""
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p not in ("", here)]
    sys.path[:0] = [str(root), str(REPO)]  # the tests from root, core from this checkout
    import pytest

    apply(next(m for m in (*MUTANTS, *EXTRA) if m.name == name))
    return pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", "-rf", "--rootdir", str(root),
                        *files], plugins=[_SlowLast()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the directory holding tests/ (default: this repo)")
    parser.add_argument("--only", nargs="*", help="mutant names to run (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--apply", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.apply:
        return _child(args.apply, root, args.files)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:32s} {m.target:40s} {m.what}")
        return 0
    known = {m.name: m for m in (*MUTANTS, *EXTRA)}
    unknown = set(args.only or ()) - set(known)
    if unknown:
        parser.error(f"unknown mutants: {sorted(unknown)}")
    chosen = [known[name] for name in args.only] if args.only else list(MUTANTS)
    start = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(lambda m: run(m, root), chosen))
    width = max(len(m.name) for m in chosen)
    print(f"{'mutant':{width}s}  {'result':8s}  {'s':>5s}  detail")
    for r in results:
        print(f"{r.mutant.name:{width}s}  {r.status:8s}  {r.seconds:5.1f}  {r.detail}")
    killed = sum(r.status == "killed" for r in results)
    survived = [r.mutant.name for r in results if r.status == "survived"]
    errors = [r.mutant.name for r in results if r.status == "error"]
    print(f"total: {killed}/{len(results)} killed, {len(survived)} survived, {len(errors)} errors "
          f"({time.perf_counter() - start:.0f} s, tests from {root})")
    if survived:
        print("survived: " + ", ".join(survived))
    if errors:
        print("errors: " + ", ".join(errors))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
