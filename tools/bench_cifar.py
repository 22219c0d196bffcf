"""Fixed-budget CIFAR-10 comparison (a benchmark, not a test): Cutout vs KeepCutout at lengths 16 and
24 (and KeepCutout 16 with area-normalised region scores, ``aug.region_score=mean``), RandAugment vs
KeepRandAugment, and AutoAugment + Cutout vs AutoAugment + paste + Cutout and AutoAugment + paste + KeepCutout
(AutoAugment in its CIFAR order: policy, then pad-crop / flip, then Cutout), over n seeds. Reports per
seed and as mean ± std: test top-1, the paired difference to the arm's baseline (same seed), the mean
area actually cut (pixels per image: border boxes are clipped), training images/s and the keep
overhead (the arm's fastest median epoch time over seeds relative to its baseline's), as a table and
JSON.

Two controls the paper never ran, next to each Keep arm (``--controls``, both by default), built per seed
from that seed's measured Keep and baseline runs:

* ``<keep arm>.area_matched``: the baseline with a plain Cutout whose mean cut area equals the Keep arm's
  measured one (``aug.cutout_area``: a side of L or L + 1 per image, mixed so the expected clipped area is
  that value) - KeepCutout with the sum score (Eq. 1) prefers border-clipped boxes and cuts less (about
  168 px against Cutout's 196 at 32x32, length 16), and Cutout's accuracy depends on the cut size (the
  paper's Table 2); only for Keep arms with a selective Cutout;
* ``<keep arm>.compute_matched``: the baseline trained for the Keep arm's wall time, i.e. its epochs times
  the measured overhead (the Keep arm's median epoch time over the baseline's at that seed), rounded up.

The Keep arm's paired differences against each control are reported like the one against its baseline.

    python tools/bench_cifar.py --data ../shared/data/cifar10-jpeg.tar.gz --preset cpu    # hours with controls, 2 cores
    python tools/bench_cifar.py --data ../shared/data/cifar10-jpeg.tar.gz --preset cpu_quick \
        --arms cutout16 keep_cutout16                                                     # smoke, 5-10 min
    python tools/bench_cifar.py --data /data/cifar10 --preset gpu                           # one H100

``--data`` is a CIFAR-10 folder (torchvision format or ImageFolder layout) or the JPEG archive, which is
extracted once into ``--cache``. Extra ``key=value`` arguments override every arm's config. Seeds can be
split over processes (``--first-seed 2 --seeds 1 --out other``) and merged afterwards, without training:
``--merge out/bench_cifar.json other/bench_cifar.json --out merged.json``.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from classification.engine import Trainer
from classification.schema import ClsConfig
from core.engine.config import load_config
from tools.bench_common import bench_parser, cifar_root, mean_std

BASE = Path(__file__).resolve().parents[1] / "classification" / "configs" / "cifar10" / "base.yaml"
AA = "aug.policy_order=before_crop"  # AutoAugment's CIFAR code: policy, then pad-crop and flip (data_utils.py)
ARMS = {
    "cutout16": ["aug.method=cutout", "aug.length=16"],
    "keep_cutout16": ["aug.method=keep_cutout", "aug.length=16"],
    "keep_cutout16_mean": ["aug.method=keep_cutout", "aug.length=16", "aug.region_score=mean"],
    "cutout24": ["aug.method=cutout", "aug.length=24"],
    "keep_cutout24": ["aug.method=keep_cutout", "aug.length=24"],
    "randaugment": ["aug.method=randaugment", "aug.length=16"],
    "keep_randaugment": ["aug.method=keep_randaugment", "aug.length=16"],
    "autoaugment_cutout16": ["aug.method=autoaugment_cutout", "aug.length=16", AA],
    "keep_autoaugment_cutout16": ["aug.method=keep_autoaugment_cutout", "aug.length=16", AA],
    # the paste and a selective Cutout (one saliency map): the Cutout avoids the important regions too
    "keep_autoaugment_keep_cutout16": ["aug.method=keep_autoaugment_keep_cutout", "aug.length=16", AA],
}
PAIRS = {"keep_cutout16": "cutout16", "keep_cutout16_mean": "cutout16", "keep_cutout24": "cutout24",
         "keep_randaugment": "randaugment", "keep_autoaugment_cutout16": "autoaugment_cutout16",
         "keep_autoaugment_keep_cutout16": "autoaugment_cutout16"}
CONTROLS = ("area", "compute")
PRESETS = {
    # 2 CPU cores: a width-16 ResNet-18 on 10,000 evenly spaced train images, 4 epochs, 3 seeds
    "cpu": dict(seeds=3, overrides=["model.kwargs={width: 16}", "data.limit_train=10000", "data.batch_size=128",
                                    "data.workers=0", "train.epochs=4", "optim.lr=0.1", "train.device=cpu"]),
    # 2 CPU cores, a smoke-sized measurement of the bookkeeping (noise-level accuracies): 1,000 evenly spaced
    # train images, 2 epochs of batch 64, 1,000 test images, 3 seeds; Cutout 16 / KeepCutout 16 and their two
    # controls: 5-10 minutes on a quiet machine (estimated from the cpu preset's throughput)
    "cpu_quick": dict(seeds=3, overrides=["model.kwargs={width: 16}", "data.limit_train=1000", "data.limit_val=1000",
                                          "data.batch_size=64", "data.workers=0", "train.epochs=2", "optim.lr=0.1",
                                          "train.device=cpu"]),
    # one H100: the paper's ResNet-18 on all 50,000 images, 30 epochs, bf16, channels_last
    "gpu": dict(seeds=1, overrides=["data.workers=8", "train.epochs=30", "train.amp=bf16",
                                    "model.channels_last=true", "train.device=cuda"]),
}


def run_arm(name: str, seed: int, root: Path, overrides: list[str], out_dir: Path,
            arm_overrides: list[str] | None = None) -> dict:
    """One (arm, seed) run (``arm_overrides``: the arm's settings, by default ``ARMS[name]``; a control's are
    computed); a run already finished in ``out_dir`` with the same settings is reused, so an interrupted
    benchmark continues where it stopped."""
    run_dir = out_dir / f"{name}_s{seed}"
    arm = ARMS[name] if arm_overrides is None else arm_overrides
    settings = [f"data.root={root}", "data.dataset=cifar10", *overrides, *arm, f"train.seed={seed}",
                f"train.output_dir={run_dir}", "train.tensorboard=false"]
    done = run_dir / "bench_result.json"
    if done.is_file():
        stored = json.loads(done.read_text())
        if stored.get("settings") == settings:
            print(f"   reusing the finished run in {run_dir}", flush=True)
            return stored["result"]
    result = train_arm(name, seed, settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"settings": settings, "result": result}, indent=2))
    return result


def train_arm(name: str, seed: int, settings: list[str]) -> dict:
    cfg = load_config(ClsConfig, BASE, settings)
    trainer = Trainer(cfg)
    meter = None
    if cfg.aug.plan.region_op is not None:
        trainer.keep = meter = CutAreaMeter(trainer.keep)
    metrics = trainer.fit(overwrite=True)
    with open(trainer.out / "metrics.csv", newline="") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    return {"seed": seed, "top1": metrics["val_top1"], "img_s": metrics["img_s"],
            "sec_per_epoch": statistics.median(seconds), "train_seconds": round(sum(seconds), 1),
            "epochs": cfg.train.epochs, "cut_area": meter.mean() if meter else None}


def selective_cutout(arm: str) -> bool:
    """Whether ``arm``'s region op is a selective Cutout (so it may cut less than its baseline)."""
    p = load_config(ClsConfig, BASE, ARMS[arm]).aug.plan
    return p.region_op == "cutout" and p.keep_cut


def control_overrides(kind: str, keep_arm: str, keep_run: dict, base_run: dict,
                      overhead: float | None = None) -> list[str] | None:
    """The arm settings of the ``kind`` control of ``keep_arm`` at one seed (see the module docstring), from that
    seed's Keep and baseline runs: the baseline's settings plus ``aug.cutout_area`` (``area``; None unless the
    Keep arm's Cutout is selective: a paste alone cuts as much as its baseline) or ``train.epochs`` (``compute``;
    the measured overhead, or ``overhead`` when given: ``--overhead``, e.g. from a quiet machine). A measured
    overhead below 1 (the Keep step does strictly more work than its baseline's) means other load disturbed the
    timing: the control is not built (None) and a line says why."""
    base = ARMS[PAIRS[keep_arm]]
    if kind == "area":
        if keep_run.get("cut_area") is None or not selective_cutout(keep_arm):
            return None
        return [*base, f"aug.cutout_area={keep_run['cut_area']}"]
    if kind == "compute":
        if overhead is None:
            overhead = keep_run["sec_per_epoch"] / base_run["sec_per_epoch"]
            if overhead < 1.0:
                print(f"{control_name(keep_arm, kind)}, seed {keep_run['seed']}: not run: measured overhead "
                      f"{overhead:.2f}x < 1, the timing was disturbed by other load (pass --overhead)", flush=True)
                return None
        return [*base, f"train.epochs={math.ceil(base_run['epochs'] * overhead - 1e-9)}"]
    raise ValueError(f"unknown control {kind!r}; expected one of {CONTROLS}")


def control_name(keep_arm: str, kind: str) -> str:
    return f"{keep_arm}.{kind}_matched"


class CutAreaMeter:
    """Wraps the trainer's keep step and sums the area of the region op's boxes and the image count on the
    device, in place (so a step captured as a CUDA graph keeps counting at every replay), read once at the
    end: the pixels actually cut per image, after clipping at the borders."""

    def __init__(self, keep) -> None:
        self.keep, self.total, self.images = keep, None, None

    def __call__(self, *args, **kwargs):
        out = self.keep(*args, **kwargs)
        b = out.boxes
        area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum()
        if self.total is None:  # the first (eager) step
            self.total, self.images = torch.zeros_like(area), torch.zeros_like(area)
        self.total.add_(area)
        self.images.add_(len(b))
        return out

    def mean(self) -> float | None:
        return None if self.total is None else round(self.total.item() / self.images.item(), 1)


def summarise(results: dict[str, list[dict]]) -> list[dict]:
    """One row per arm: mean ± std top-1, the paired per-seed differences of a Keep arm to its baseline and to
    its controls (``<keep>.area_matched``, ``<keep>.compute_matched``: Keep minus control), the mean cut area,
    epochs, images/s, the keep overhead, and the runs."""
    rows = []
    for arm, runs in results.items():
        keep_arm, _, control = arm.partition(".")
        base = PAIRS.get(keep_arm)
        row = {"arm": arm, "baseline": base if not control else None, "control_of": keep_arm if control else None,
               "top1": mean_std([r["top1"] for r in runs])}
        paired, overhead = {}, None
        if not control and base in results:
            # the fastest epoch time of each arm (over seeds) is the least disturbed by other load
            overhead = min(r["sec_per_epoch"] for r in runs) / min(r["sec_per_epoch"] for r in results[base])
            others = {"baseline": base, **{f"{kind}_matched": control_name(arm, kind) for kind in CONTROLS}}
            paired = {key: paired_diffs(runs, results[other]) for key, other in others.items() if other in results}
        for key, label in (("baseline", "paired_diff"), ("area_matched", "vs_area_matched"),
                           ("compute_matched", "vs_compute_matched")):
            diffs = paired.get(key)
            row[label] = f"{mean_std(diffs, signed=True)} (n={len(diffs)})" if diffs else "-"
        areas = [r["cut_area"] for r in runs if r.get("cut_area") is not None]
        row.update({"paired": {k: {"per_seed": [round(d, 2) for d in v], "t": t_stat(v)} for k, v in paired.items()},
                    "cut_area": f"{statistics.mean(areas):.1f}" if areas else "-",
                    "epochs": "/".join(sorted({str(r.get("epochs", "?")) for r in runs})),
                    "img_s": round(statistics.mean(r["img_s"] for r in runs)),
                    "keep_overhead": f"{overhead:.2f}x" if overhead else "-", "runs": runs})
        rows.append(row)
    return rows


def paired_diffs(runs: list[dict], others: list[dict]) -> list[float]:
    """``runs`` minus ``others`` in top-1, seed by seed (seeds present in both)."""
    by_seed = {r["seed"]: r["top1"] for r in others}
    return [r["top1"] - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]


def t_stat(diffs: list[float]) -> float | None:
    """Paired t statistic, mean / (std / sqrt(n)) with n - 1 degrees of freedom (None below 2 seeds or for
    identical differences)."""
    if len(diffs) < 2 or statistics.stdev(diffs) == 0:
        return None
    return round(statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs))), 2)


def main() -> None:
    ap = bench_parser(__doc__, PRESETS, cache="data/cifar10-jpeg", out="outputs/bench_cifar", data_required=False)
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--first-seed", type=int, default=0,
                    help="run seeds first-seed .. first-seed + seeds - 1 (to split a benchmark over processes)")
    ap.add_argument("--controls", nargs="*", default=list(CONTROLS), choices=list(CONTROLS),
                    help="controls next to each Keep arm whose baseline runs too (none: --controls with no value)")
    ap.add_argument("--overhead", type=float, help="the compute-matched control's Keep / baseline time ratio "
                    "(default: measured at each seed; give one measured on a quiet machine when others share it)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="no training: merge the bench_cifar.json of runs split with --first-seed into --out")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if not args.data:
        ap.error("--data is required")
    preset = PRESETS[args.preset]
    root = cifar_root(args.data, args.cache)
    out = Path(args.out)
    results: dict[str, list[dict]] = {}
    cpu = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    device = torch.cuda.get_device_name() if args.preset == "gpu" else cpu
    overrides = [*preset["overrides"], *args.overrides]
    out.mkdir(parents=True, exist_ok=True)

    def record(name: str, seed: int, arm_overrides: list[str] | None = None) -> dict:
        print(f"== {name}, seed {seed}", flush=True)
        result = run_arm(name, seed, root, overrides, out, arm_overrides)
        results.setdefault(name, []).append(result)
        # written after every run: an interrupted benchmark keeps what it measured
        (out / "bench_cifar.json").write_text(json.dumps({
            "preset": args.preset, "device": device, "overrides": overrides, "controls": args.controls,
            "date": time.strftime("%Y-%m-%d"), "results": summarise(results)}, indent=2))
        return result

    first = args.first_seed
    for seed in range(first, first + (args.seeds or preset["seeds"])):  # seed-major: a cut-short run has whole seeds
        this_seed = {arm: record(arm, seed) for arm in args.arms}
        for kind in args.controls:  # from this seed's measured Keep and baseline runs
            for arm in args.arms:
                if PAIRS.get(arm) in this_seed:
                    extra = control_overrides(kind, arm, this_seed[arm], this_seed[PAIRS[arm]], args.overhead)
                    if extra is not None:
                        record(control_name(arm, kind), seed, extra)
    print_table(summarise(results), args.preset, device)
    print(f"\nwrote {out / 'bench_cifar.json'}")


def print_table(rows: list[dict], preset: str, device: str) -> None:
    print(f"\n# bench_cifar, preset {preset}, {device}\n")
    print("| arm | test top-1 (%) | paired diff vs baseline (pp) | Keep - area-matched (pp) "
          "| Keep - compute-matched (pp) | mean cut area (px) | epochs | train img/s | keep overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['top1']} | {r['paired_diff']} | {r['vs_area_matched']} | {r['vs_compute_matched']} "
              f"| {r['cut_area']} | {r['epochs']} | {r['img_s']} | {r['keep_overhead']} |")
    print("\nper seed (top-1): " + "; ".join(f"{r['arm']} " + ", ".join(f"{x['top1']:.2f}" for x in r["runs"])
                                          for r in rows))


def merge(paths: list[str], out: str) -> None:
    """One table and JSON from the JSONs of runs split over processes (``--first-seed``): same preset and
    overrides required."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    for key in ("preset", "overrides"):
        if len({json.dumps(part[key]) for part in parts}) > 1:
            raise SystemExit(f"--merge: the JSONs differ in {key!r}")
    results: dict[str, list[dict]] = {}
    for part in parts:
        for row in part["results"]:
            results.setdefault(row["arm"], []).extend(row["runs"])
    rows = summarise(results)
    merged = {**parts[0], "merged_from": paths, "date": time.strftime("%Y-%m-%d"), "results": rows}
    Path(out).write_text(json.dumps(merged, indent=2))
    print_table(rows, parts[0]["preset"], parts[0]["device"])
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
