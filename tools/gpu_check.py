"""One prepared check for a lent GPU: CUDA tests, bench_core on CUDA, whole-step sync checks, and a real
CIFAR-10 Cutout vs KeepCutout comparison on the device-resident loader. Prints a summary table last and
writes ``gpu_check.json`` + ``gpu_check.log`` into ``--out``.

    PYTHONPATH=. python3 tools/gpu_check.py --out "$OUT" --data gpu_data/cifar10-jpeg.tar.gz
    python tools/gpu_check.py --dry-run --out /tmp/gpu_check      # CPU, tiny sizes, seconds (run by the tests)

It needs only torch, torchvision, numpy, pyyaml, tqdm and pytest (no install: the device machine runs its
own python3 with ``PYTHONPATH=.``), and keeps to ``--budget`` seconds: the CIFAR comparison runs its
seeds in pairs (Cutout, then KeepCutout) and starts a pair only if the time measured so far says it fits.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the lent GPU machine runs the checkout without installing it

from classification.engine import Trainer  # noqa: E402
from classification.schema import ClsConfig  # noqa: E402
from core.engine.config import load_config  # noqa: E402
from tools import bench_core  # noqa: E402
from tools.bench_common import cifar_root  # noqa: E402

CIFAR_BASE = ROOT / "classification" / "configs" / "cifar10" / "base.yaml"
ARMS = {"cutout": ["aug.method=cutout"],
        "keep_cutout_lowres_early": ["aug.method=keep_cutout", "aug.low_res=true", "aug.early_head=true"]}
DRY_TESTS = {"status": "skipped (dry run: the test suite is what runs this script)"}


class Tee:
    """Write to the terminal and to the log file at once."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> None:
        for s in self.streams:
            s.write(text)
            s.flush()

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def cuda_tests(out: Path) -> dict:
    """The CUDA-marked tests of core, classification and re-ID (detection needs detectron2)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/core",
           "tests/classification", "tests/reid"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    (out / "cuda_tests.log").write_text(run.stdout + run.stderr)
    tail = [line for line in run.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
    print(run.stdout[-3000:])
    return {"status": "passed" if run.returncode == 0 else f"FAILED (exit {run.returncode})", "summary": tail[0],
            "seconds": round(time.perf_counter() - t0, 1)}


def cifar_run(arm: str, seed: int, overrides: list[str], out_dir: Path) -> dict:
    cfg = load_config(ClsConfig, CIFAR_BASE, [*overrides, *ARMS[arm], f"train.seed={seed}",
                                              f"train.output_dir={out_dir / f'{arm}_s{seed}'}"])
    trainer = Trainer(cfg)
    t0 = time.perf_counter()
    metrics = trainer.fit(overwrite=True)
    with open(trainer.out / "metrics.csv", newline="") as f:
        img_s = [float(r["img_s"]) for r in csv.DictReader(f)]
    steady = img_s[1:] or img_s  # the first epoch includes cuDNN autotuning and warm-up
    return {"arm": arm, "seed": seed, "top1": metrics["val_top1"], "img_s": statistics.median(steady),
            "epochs": len(img_s), "wall_s": round(time.perf_counter() - t0, 1), "loader": trainer.device_data}


def cifar_comparison(args, out: Path, deadline: float) -> dict:
    """ResNet-18 Cutout vs KeepCutout (low-res + early head), seeds in pairs while the budget allows."""
    if args.dry_run:
        overrides = ["data.dataset=sample", "data.root=", "data.limit_train=64", "data.limit_val=32",
                     "data.batch_size=16", "model.kwargs={width: 4}", "train.epochs=1", "train.device=cpu",
                     "data.loader=device"]
    else:
        root = cifar_root(args.data, str(Path(tempfile.gettempdir()) / "keepaug-cifar10"))
        overrides = [f"data.root={root}", "data.dataset=cifar10", f"train.epochs={args.epochs}",
                     "train.device=cuda", "train.amp=bf16", "model.channels_last=true", "data.loader=device"]
    overrides += ["train.tensorboard=false", "train.progress=false", "data.workers=0"]
    runs: list[dict] = []
    pair_s = None
    for seed in range(args.seeds):
        if pair_s is not None and time.perf_counter() + pair_s > deadline:
            print(f"cifar: stopping before seed {seed}: a pair takes ~{pair_s:.0f} s, the budget ends sooner")
            break
        t0 = time.perf_counter()
        for arm in ARMS:
            print(f"== cifar {arm}, seed {seed}", flush=True)
            runs.append(cifar_run(arm, seed, overrides, out / "runs"))
            print(json.dumps(runs[-1]), flush=True)
        pair_s = time.perf_counter() - t0
    summary = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        if mine:
            top1 = [r["top1"] for r in mine]
            summary[arm] = {"top1_mean": statistics.mean(top1),
                            "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
                            "img_s": statistics.mean(r["img_s"] for r in mine), "seeds": len(mine)}
    if "cutout" in summary and len(summary) == 2:
        keep = summary["keep_cutout_lowres_early"]
        keep["img_s_ratio_to_cutout"] = keep["img_s"] / summary["cutout"]["img_s"]
        keep["paired_diff_per_seed"] = [b["top1"] - a["top1"] for a, b in zip(runs[0::2], runs[1::2])]
    return {"overrides": overrides, "runs": runs, "summary": summary}


def summary_table(report: dict) -> str:
    lines = [f"# gpu_check on {report['device_name']} (torch {report['torch']}), {report['date']}", "",
             "| check | result |", "|---|---|", f"| CUDA-marked tests | {report['cuda_tests'].get('summary', '')} "
             f"{report['cuda_tests']['status']} |"]
    core = report.get("bench_core", {})
    for row in core.get("ops", []):
        lines.append(f"| {row['op']} B={row['batch']} {row['shape']}: core vs per-image reference | "
                     f"{row['core_img_s']:.0f} vs {row['reference_img_s']:.0f} img/s = {row['speedup']:.0f}x; "
                     f"{row['sync']} |")
    for row in report.get("throughput", []):
        busy = f", GPU busy {100 * row['gpu_busy']:.0f}% of the step" if "gpu_busy" in row else ""
        lines.append(f"| probe: {row['variant']} bf16+cl batch {row['batch']} | {row['img_s']:.0f} img/s{busy} |")
    for row in report.get("step_paths", []):
        busy = f", GPU busy {100 * row['gpu_busy']:.0f}%" if "gpu_busy" in row else ""
        lines.append(f"| trainer step {row['arm']}, {row['path']} | {row['img_s']:.0f} img/s{busy} |")
    for row in core.get("train_step", []):
        if row["variant"] in ("cutout", "keep_full", "keep_lowres", "keep_early", "keep_lowres_early"):
            lines.append(f"| train step {row['variant']} ({row['precision']}) | {row['img_s']:.0f} img/s, "
                         f"{row['ratio_to_cutout']:.2f}x Cutout's time, {row['peak_mem_mib']} MiB |")
    syncs = dict(core.get("sync_free", {}), **report.get("trainer_sync", {}))
    if syncs:
        bad = {k: v for k, v in syncs.items() if v != "no sync"}
        lines.append(f"| sync debug 'error' ({len(syncs)} steps) | "
                     f"{'no sync in any' if not bad else '; '.join(f'{k}: {v}' for k, v in bad.items())} |")
    cifar = report.get("cifar", {})
    for arm, s in cifar.get("summary", {}).items():
        extra = f", {s['img_s_ratio_to_cutout']:.2f}x Cutout's img/s" if "img_s_ratio_to_cutout" in s else ""
        lines.append(f"| CIFAR-10 {arm} ({s['seeds']} seed(s), {cifar['runs'][0]['epochs']} epochs) | "
                     f"top-1 {s['top1_mean']:.2f} ± {s['top1_std']:.2f}, {s['img_s']:.0f} img/s{extra} |")
    lines.append(f"| wall time | {report['seconds']:.0f} s |")
    return "\n".join(lines)


def gpu_busy_fraction(step, device: torch.device, steps: int = 5) -> float:
    """Share of a step's wall time that the GPU spends in kernels (torch.profiler): near 1 = GPU-bound,
    low = the host (Python dispatch, kernel launches) limits the step."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernel_us = sum(e.self_device_time_total for e in prof.key_averages())  # each kernel counted once
    return kernel_us / 1e6 / wall


def throughput_probe() -> list[dict]:
    """What limits a training step: images/s of Cutout and KeepCutout (low-res + early) at batch 128 and 512
    in bf16 + channels_last, and the GPU-busy share of the batch-128 steps."""
    device, rows = torch.device("cuda"), []
    torch.backends.cudnn.benchmark = True
    for batch in (128, 512):
        for variant in ("cutout", "keep_lowres_early"):
            step = bench_core.make_step(variant, device, "bf16+cl", batch)
            seconds = statistics.median(bench_core.timeit(step, device, 1) for _ in range(15))
            row = {"variant": variant, "batch": batch, "img_s": batch / seconds}
            if batch == 128:
                row["gpu_busy"] = gpu_busy_fraction(step, device)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def sample_trainer(device: torch.device, batch: int, overrides: list[str]) -> Trainer:
    """A trainer on the embedded sample with the device-resident loader, ready for ``step_batch``."""
    base = ["data.dataset=sample", "data.root=", f"data.batch_size={batch}", f"train.device={device.type}",
            "train.tensorboard=false", "train.progress=false", "data.loader=device",
            f"train.output_dir={tempfile.mkdtemp()}"]
    trainer = Trainer(load_config(ClsConfig, CIFAR_BASE, [*base, *overrides]))
    trainer.start_checks()
    trainer.begin_epoch()
    return trainer


STEP_PATHS = {"eager": ["train.cuda_graph=false"], "graph": [],
              "compiled": ["model.compile=true", "train.cuda_graph=false"]}


def step_paths(dry_run: bool, steps: int = 30) -> list[dict]:
    """The trainer's whole step (device loader, batch 128, bf16 + channels_last) for Cutout and KeepCutout
    (low-res + early), eager, as one CUDA graph (train.cuda_graph) and compiled (model.compile, mode
    reduce-overhead), side by side: images/s over ``steps`` steps after a warm-up, and the GPU-busy share.
    The dry run times the eager path on the CPU at tiny sizes (capture and reduce-overhead need CUDA)."""
    device = torch.device("cpu" if dry_run else "cuda")
    batch = 8 if dry_run else 128
    base = [f"data.limit_train={4 * batch}"]
    base += ["model.kwargs={width: 4}"] if dry_run else ["train.amp=bf16", "model.channels_last=true"]
    rows = []
    for arm, arm_overrides in ARMS.items():
        for path in ("eager",) if dry_run else STEP_PATHS:
            trainer = sample_trainer(device, batch, [*base, *arm_overrides, *STEP_PATHS[path]])
            trainer.prepare_step()  # the path fit() would take (the graph unless the overrides rule it out)
            stream = itertools.chain.from_iterable(iter(trainer.train_batches, None))  # epoch after epoch, endless
            step = lambda: trainer.step_batch(next(stream))  # noqa: E731,B023
            for _ in range(2 if dry_run else 8):  # warm-up, capture, compilation
                step()
            seconds = bench_core.timeit(step, device, 2 if dry_run else steps)
            row = {"arm": arm, "path": path, "img_s": batch / seconds, "step_path": trainer.step_path}
            if not dry_run:
                row["gpu_busy"] = gpu_busy_fraction(step, device)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def trainer_sync() -> dict:
    """A whole classification training step (device loader; keep_cutout low-res + early, keep_cutmix) in bf16
    + channels_last under sync debug mode 'error'."""
    device = torch.device("cuda")
    results = {}
    for name, arm in {"trainer keep_cutout lowres+early": ARMS["keep_cutout_lowres_early"],
                      "trainer keep_cutmix": ["aug.method=keep_cutmix"]}.items():
        trainer = sample_trainer(device, 128, ["train.amp=bf16", "model.channels_last=true", *arm])
        batches = iter(trainer.train_batches())
        results[name] = bench_core.sync_status(lambda: trainer.step_batch(next(batches)), device)  # noqa: B023
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for gpu_check.json, gpu_check.log and run folders")
    ap.add_argument("--data", default="gpu_data/cifar10-jpeg.tar.gz", help="CIFAR-10 folder or the JPEG archive")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per CIFAR run")
    ap.add_argument("--seeds", type=int, default=3, help="at most this many seeds per arm")
    ap.add_argument("--budget", type=float, default=420, help="seconds for the whole check")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (seconds): the script cannot rot")
    ap.add_argument("--only-tests-and-probe", action="store_true", help="only the CUDA tests and the throughput probe")
    ap.add_argument("--only-cifar", action="store_true",
                    help="only the CIFAR-10 Cutout vs KeepCutout comparison (a call of its own, for the full budget)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gpu_check.log", "w") as log, contextlib.redirect_stdout(Tee(sys.__stdout__, log)):
        return run_checks(args, out)


def run_checks(args, out: Path) -> int:
    """The checks ``args`` select, saving ``gpu_check.json`` after each; the exit code."""
    start = time.perf_counter()
    deadline = start + args.budget
    dry = args.dry_run
    device = torch.device("cpu" if dry else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run on a machine without one")
    report = {"device_name": bench_core.machine(device), "torch": torch.__version__,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "dry_run": dry,
              "budget_s": args.budget}
    checks = {"cuda_tests": lambda: DRY_TESTS if dry else cuda_tests(out),
              "bench_core": lambda: bench_core.run(device, "dry" if dry else "full", steps=2 if dry else 20,
                                                   repeats=1 if dry else 5, train=True, out=None,
                                                   batch=8 if dry else 128, width=4 if dry else 64, peak=not dry),
              "trainer_sync": lambda: {} if dry else trainer_sync(),
              "throughput": lambda: [] if dry else throughput_probe(),
              "step_paths": lambda: step_paths(dry),
              "cifar": lambda: cifar_comparison(args, out, deadline)}
    if args.only_cifar:
        checks = {"cifar": checks["cifar"]}
    elif args.only_tests_and_probe:  # a second call on a warm machine: the tests again + the throughput probe
        checks = {k: checks[k] for k in ("cuda_tests", "throughput")}
    print(f"# gpu_check: {report['device_name']}, torch {report['torch']}", flush=True)
    for name, check in checks.items():
        report[name] = check()
        report["seconds"] = time.perf_counter() - start
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    if args.only_cifar:
        print(json.dumps(report["cifar"]["summary"], indent=2))
        return 0
    if args.only_tests_and_probe:
        print(json.dumps(report, indent=2))
        return 0 if "FAILED" not in report["cuda_tests"]["status"] else 1
    table = summary_table(report)
    (out / "summary.md").write_text(table + "\n")
    print("\n" + table, flush=True)
    return int("FAILED" in report["cuda_tests"]["status"] or "SYNC" in table)


if __name__ == "__main__":
    sys.exit(main())
