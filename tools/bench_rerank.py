"""k-reciprocal re-ranking benchmark (a benchmark, not a test): the per-image reference loop
(`reid.rerank.re_ranking_reference`, CPU) vs the vectorised `reid.rerank.re_ranking` on random
L2-normalised features, by default at the full Market-1501 size (3,368 queries x 15,913 gallery, 2048-d).

    python tools/bench_rerank.py                                  # both, CPU (the reference takes minutes)
    python tools/bench_rerank.py --skip-reference --device cuda   # fast only, on the GPU
    python tools/bench_rerank.py --queries 500 --gallery 2500 --out bench_rerank_small.json

Each implementation runs once in a fresh process on the same seeded features. Reported: seconds of the
call, peak memory (CPU: the process's peak RSS, /proc/self/status VmHWM, which includes the ~0.7 GB that
importing torch maps, so the RSS after import and feature creation is reported too as ``base_rss_mib``;
CUDA: torch.cuda.max_memory_allocated of the call), the speed-up and the max abs difference of the two
(Q, G) outputs. The reference always runs on the CPU (it is a Python loop over numpy). Results are printed
and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools.bench_common import rss_kib, sync

GOALS = dict(speedup=7.0, max_abs_diff=1e-5, peak_mib=2048)
# the settings of a run and their defaults: each is a flag (--lambda-value), passed to the child, and in the report
SETTINGS = dict(queries=3368, gallery=15913, dim=2048, k1=20, k2=6, lambda_value=0.3, seed=0)


def child(args) -> None:
    """One implementation in this (fresh) process: time it, measure its peak memory, save its output."""
    from reid.rerank import re_ranking, re_ranking_reference

    device = torch.device(args.device if args.child == "fast" else "cpu")
    gen = torch.Generator().manual_seed(args.seed)  # the same features in each process: queries, then gallery
    q, g = (F.normalize(torch.randn(n, args.dim, generator=gen), dim=1).to(device)
            for n in (args.queries, args.gallery))
    rerank = re_ranking if args.child == "fast" else re_ranking_reference
    fn = lambda a, b: rerank(a, b, k1=args.k1, k2=args.k2, lambda_value=args.lambda_value)  # noqa: E731
    fn(q[:8], g[: max(args.k1 + 2, 40)])  # warm-up on a tiny input (lazy init, CUDA context / kernels)
    sync(device)
    base_rss = rss_kib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    out = fn(q, g)
    sync(device)
    seconds = time.perf_counter() - t0
    res = dict(impl=args.child, device=str(device), seconds=seconds, peak_rss_mib=rss_kib() / 1024,
               base_rss_mib=base_rss / 1024)
    if device.type == "cuda":
        res.update(peak_cuda_mib=torch.cuda.max_memory_allocated(device) / 2**20,
                   inputs_cuda_mib=base_cuda / 2**20, gpu=torch.cuda.get_device_name(device))
    np.save(args.save, out)
    print(json.dumps(res))


def run_child(impl: str, args, save: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--save", str(save), "--device", args.device]
    for name in SETTINGS:
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    print(f"running {impl} ...", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{impl} failed (exit {done.returncode})")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    res["load_avg_1m_after"] = os.getloadavg()[0]
    return res


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in SETTINGS.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    ap.add_argument("--device", default="cpu", help="device of the vectorised version (the reference: CPU)")
    ap.add_argument("--skip-reference", action="store_true", help="time only the vectorised version")
    ap.add_argument("--out", default="bench_rerank.json")
    ap.add_argument("--child", choices=["reference", "fast"], help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    report = dict({name: getattr(args, name) for name in SETTINGS}, device=str(torch.device(args.device)),
                  cpu=f"{cpu_name()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} threads",
                  load_avg_1m_start=os.getloadavg()[0], goals=GOALS, results=[])
    with tempfile.TemporaryDirectory() as tmp:
        outs = {}
        for impl in ["fast"] + ([] if args.skip_reference else ["reference"]):
            res = run_child(impl, args, Path(tmp) / f"{impl}.npy")
            res["peak_mib"] = res.get("peak_cuda_mib", res["peak_rss_mib"])
            res["peak_kind"] = ("torch.cuda.max_memory_allocated" if "peak_cuda_mib" in res
                                else "peak RSS (VmHWM) of a fresh process")
            report["results"].append(res)
            outs[impl] = np.load(Path(tmp) / f"{impl}.npy")
        if "reference" in outs:
            fast, ref = outs["fast"], outs["reference"]
            t_fast, t_ref = (r["seconds"] for r in report["results"])
            report.update(max_abs_diff=float(np.abs(fast - ref).max()), speedup=t_ref / t_fast,
                          shape_and_dtype_equal=bool(fast.shape == ref.shape and fast.dtype == ref.dtype))
            report["goals_met"] = dict(speedup=report["speedup"] >= GOALS["speedup"],
                                       max_abs_diff=report["max_abs_diff"] <= GOALS["max_abs_diff"],
                                       peak_mem=all(r["peak_mib"] <= GOALS["peak_mib"] for r in report["results"]))
    report["load_avg_1m_end"] = os.getloadavg()[0]

    print(f"\nQ={args.queries} G={args.gallery} dim={args.dim} k1={args.k1} k2={args.k2} "
          f"lambda={args.lambda_value}; {report['cpu']}; load avg {report['load_avg_1m_start']:.2f} at start")
    print("| impl | device | seconds | peak MiB | peak kind | base RSS MiB |\n|---|---|---|---|---|---|")
    for r in report["results"]:
        print(f"| {r['impl']} | {r['device']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['peak_kind']} | "
              f"{r['base_rss_mib']:.0f} |")
    if "speedup" in report:
        print(f"speed-up {report['speedup']:.1f}x, max abs diff {report['max_abs_diff']:.3g}, "
              f"goals met: {report['goals_met']}")
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
