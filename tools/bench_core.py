"""Benchmark of `core` (a benchmark, not a test): prints tables and writes JSON.

(a) images/s of selective-cut and selective-paste with the saliency given, batched `core` versus the
    per-image reference of `core.testing` (torch scoring per image + a Python rejection loop with
    `.item()` per try), at B=128 3x32x32 and B=64 3x224x224.
(b) training-step time of the CIFAR ResNet-18 (batch 128, SGD) with plain Cutout versus KeepCutout
    with full / low-res / early-head / low-res+early saliency, measured alternately in one run and
    reported as ratios to Cutout (each Keep variant also with a bf16-autocast saliency pass, "+bf16"),
    with peak memory (CUDA: max allocated; CPU: peak RSS of a fresh
    process running a few steps of that variant).
(c) on CUDA: one KeepCutout / paste / CutMix / erasing step under torch.cuda.set_sync_debug_mode("error").

    python tools/bench_core.py [--device cuda] [--steps 10] [--out bench_core.json] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from classification.models import create_model
from core import EarlyHead, KeepAugment, cutout, paste, selective_boxes
from core.testing import reference_keep_cut, reference_keep_paste

_KEEP = {"keep_full": dict(), "keep_lowres": dict(low_res=True), "keep_early": dict(early=True),
         "keep_lowres_early": dict(low_res=True, early=True)}
VARIANTS = {"cutout": dict(selective=False), **_KEEP,
            **{f"{k}+bf16": dict(v, saliency_dtype=torch.bfloat16) for k, v in _KEEP.items()}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats: int) -> float:
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_ops(device: torch.device, repeats: int) -> list[dict]:
    rows = []
    for b, hw, size in [(128, 32, 16), (64, 224, 112)]:
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(b, 3, hw, hw, device=device)
        x_aug = torch.randn(b, 3, hw, hw, device=device)
        sal = torch.rand(b, hw, hw, device=device, generator=g) ** 4
        fast_cut = lambda: cutout(x, selective_boxes(sal, size, 0.6, "below", generator=g))  # noqa: E731
        fast_paste = lambda: paste(x_aug, x, selective_boxes(sal, size, 0.6, "above", generator=g))  # noqa: E731
        cg = torch.Generator().manual_seed(0)
        ref_cut = lambda: reference_keep_cut(x, sal, size, 0.6, cg if device.type == "cpu" else None)  # noqa: E731
        ref_paste = lambda: reference_keep_paste(x_aug, x, sal, size, 0.6, cg if device.type == "cpu" else None)  # noqa: E731
        for name, fast, ref in [("selective-cut", fast_cut, ref_cut), ("selective-paste", fast_paste, ref_paste)]:
            t_fast = timeit(fast, device, repeats)
            t_ref = timeit(ref, device, max(1, repeats // 3))
            rows.append(dict(op=name, batch=b, shape=f"3x{hw}x{hw}", region=size, core_img_s=b / t_fast,
                             reference_img_s=b / t_ref, speedup=t_ref / t_fast))
    return rows


def make_step(variant: str, device: torch.device, channels_last: bool = False):
    opts = dict(VARIANTS[variant])
    early = opts.pop("early", False)
    torch.manual_seed(0)
    model = create_model("cifar_resnet18", num_classes=10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = EarlyHead(model, "layer1", 10).to(device) if early else None
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    keep = KeepAugment("cutout", 16, early_head=head, **opts)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(128, 3, 32, 32, device=device, generator=g)
    y = torch.randint(0, 10, (128,), device=device, generator=g)

    def step():
        out = keep(model, x, y, generator=g)
        loss = F.cross_entropy(model(out.x), out.target)
        if head is not None:
            loss = loss + head.loss(out.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    return step


def peak_memory_mb(variant: str, device: torch.device) -> float:
    if device.type == "cuda":
        step = make_step(variant, device)
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    cmd = [sys.executable, __file__, "--peak-rss-of", variant]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def peak_rss_kib() -> int:
    """Peak resident memory of this process in KiB. /proc's VmHWM resets at exec, whereas Linux's
    ru_maxrss carries over the parent's peak into a forked child."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_train(device: torch.device, steps: int) -> list[dict]:
    steppers = {v: make_step(v, device) for v in VARIANTS}
    for s in steppers.values():  # warm-up
        s()
    times = {v: [] for v in VARIANTS}
    for _ in range(steps):
        for v, s in steppers.items():  # alternate variants so drift hits all of them alike
            sync(device)
            t0 = time.perf_counter()
            s()
            sync(device)
            times[v].append(time.perf_counter() - t0)
    med = {v: sorted(t)[len(t) // 2] for v, t in times.items()}
    paper = {"keep_full": 2.0, "keep_lowres": 1.26, "keep_early": 1.21}
    goal = {"keep_full": 1.5, "keep_lowres": 1.15, "keep_early": 1.15, "keep_lowres_early": 1.04}
    base = lambda v: v.split("+")[0]  # noqa: E731
    return [dict(variant=v, step_s=med[v], img_s=128 / med[v], ratio_to_cutout=med[v] / med["cutout"],
                 paper_ratio=paper.get(base(v), "-"), cpu_goal=goal.get(base(v), "-"),
                 peak_mem_mib=round(peak_memory_mb(v, device))) for v in VARIANTS]


def sync_free_check(device: torch.device) -> dict:
    """Run every op once with CUDA sync debug mode set to error: any host sync raises."""
    model = create_model("cifar_resnet18").to(device)
    head = EarlyHead(model, "layer1", 10).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    results = {}
    keeps = {
        "keep_cutout": KeepAugment("cutout", 16),
        "keep_cutout_lowres_early": KeepAugment("cutout", 16, low_res=True, early_head=head),
        "keep_erasing": KeepAugment("erasing"),
        "keep_cutmix": KeepAugment("cutmix", num_classes=10),
        "keep_paste": KeepAugment("paste", 16),
        "keep_cutout_max_logit": KeepAugment("cutout", 16, target="max_logit"),
    }
    for name, keep in keeps.items():
        keep(model, x, y, x_aug=x.flip(3), generator=g)  # warm-up (lazy init may sync)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            keep(model, x, y, x_aug=x.flip(3), generator=g)
            results[name] = "no sync"
        except RuntimeError as err:
            results[name] = f"SYNC: {err}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return results


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of the op benchmark")
    ap.add_argument("--skip-train", action="store_true", help="only the op benchmark (a)")
    ap.add_argument("--out", default="bench_core.json")
    ap.add_argument("--peak-rss-of", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.peak_rss_of:  # child process of peak_memory_mb: two CPU steps, then the peak RSS in KiB
        step = make_step(args.peak_rss_of, device)
        step()
        step()
        print(peak_rss_kib())
        return
    report = {"machine": machine(device), "device": device.type}
    report["ops"] = bench_ops(device, args.repeats)
    print(f"# bench_core on {report['machine']}\n", flush=True)
    print(f"## (a) selective ops, saliency given\n{table(report['ops'])}\n", flush=True)
    if not args.skip_train:
        report["train_step"] = bench_train(device, args.steps)
        print(f"## (b) CIFAR ResNet-18 training step, batch 128\n{table(report['train_step'])}\n", flush=True)
    if device.type == "cuda":
        report["sync_free"] = sync_free_check(device)
        print("## (c) sync debug mode 'error'\n" + "\n".join(f"- {k}: {v}" for k, v in report["sync_free"].items()))
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}; peak RSS of this process {peak_rss_kib() / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
