"""Benchmark of `core` (a benchmark, not a test): prints tables and writes JSON.

(a) images/s of selective-cut and selective-paste with the saliency given, batched `core` versus the
    per-image reference of `core.testing` (torch scoring per image + a Python rejection loop with
    `.item()` per try), at B=128 3x32x32 and B=64 3x224x224.
(b) training-step time of the CIFAR ResNet-18 (batch 128, SGD) with plain Cutout versus KeepCutout
    with full / low-res / early-head / low-res+early saliency, measured alternately in one run and
    reported as ratios to Cutout (each Keep variant also with a bf16-autocast saliency pass, "+bf16"),
    with peak memory (CUDA: max allocated; CPU: peak RSS of a fresh process running a few steps of that variant).
    On CUDA each variant is also timed as a bf16-autocast + channels_last training step ("bf16+cl").
(c) on CUDA: one KeepCutout / paste / CutMix / erasing step under torch.cuda.set_sync_debug_mode("error");
    in (a) every timed op is first run once under that mode as well (column "sync").

    python tools/bench_core.py [--quick] [--device cuda] [--steps 10] [--out bench_core.json] [--skip-train]

The JSON is rewritten after each section, so an interrupted run keeps what it measured. On this
project's 2-core CPU machine the default preset takes about 12 minutes (most of it the per-image
reference at 224x224 and the peak-RSS child processes), ``--quick`` about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from classification.models import create_model
from core import EarlyHead, KeepAugment, cutout, paste, selective_boxes
from core.testing import reference_keep_cut, reference_keep_paste
from tools.bench_common import rss_kib, sync

_KEEP = {"keep_full": dict(), "keep_lowres": dict(low_res=True), "keep_early": dict(early=True),
         "keep_lowres_early": dict(low_res=True, early=True)}
VARIANTS = {"cutout": dict(selective=False), **_KEEP,
            **{f"{k}+bf16": dict(v, saliency_dtype=torch.bfloat16) for k, v in _KEEP.items()}}


def elapsed(fn, device: torch.device) -> float:
    """Seconds of one call of ``fn``, the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def timeit(fn, device, repeats: int) -> float:
    """The best of ``repeats`` timed calls after one warm-up call."""
    fn()
    return min(elapsed(fn, device) for _ in range(repeats))


OP_SHAPES = {"full": [(128, 32, 16), (64, 224, 112)], "quick": [(128, 32, 16), (8, 224, 112)],
             "dry": [(4, 32, 8), (2, 64, 16)]}


def sync_status(fn, device: torch.device) -> str:
    """Run ``fn`` once as a warm-up (lazy init may sync), then once under ``torch.cuda.set_sync_debug_mode("error")``
    (any host sync inside raises): "no sync", "SYNC: <the error's first line>", or "n/a" off CUDA."""
    fn()
    if device.type != "cuda":
        return "n/a"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return "no sync"
    except RuntimeError as err:
        return f"SYNC: {str(err).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode(0)


def bench_ops(device: torch.device, repeats: int, shapes=OP_SHAPES["full"]) -> list[dict]:
    rows = []
    for b, hw, size in shapes:
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(b, 3, hw, hw, device=device)
        x_aug = torch.randn(b, 3, hw, hw, device=device)
        sal = torch.rand(b, hw, hw, device=device, generator=g) ** 4
        cg = torch.Generator().manual_seed(0) if device.type == "cpu" else None  # the reference's generator
        ops = {"selective-cut": (lambda: cutout(x, selective_boxes(sal, size, 0.6, "below", generator=g)),
                                 lambda: reference_keep_cut(x, sal, size, 0.6, cg)),
               "selective-paste": (lambda: paste(x_aug, x, selective_boxes(sal, size, 0.6, "above", generator=g)),
                                   lambda: reference_keep_paste(x_aug, x, sal, size, 0.6, cg))}
        for name, (fast, ref) in ops.items():
            sync = sync_status(fast, device)
            t_fast = timeit(fast, device, repeats)
            t_ref = timeit(ref, device, max(1, repeats // 3))
            rows.append(dict(op=name, batch=b, shape=f"3x{hw}x{hw}", region=size, core_img_s=b / t_fast,
                             reference_img_s=b / t_ref, speedup=t_ref / t_fast, sync=sync))
    return rows


PRECISIONS = ("fp32", "bf16+cl")  # bf16+cl: bf16 autocast for the whole step + channels_last


def make_step(variant: str, device: torch.device, precision: str = "fp32", batch: int = 128, width: int = 64):
    opts = dict(VARIANTS[variant])
    early = opts.pop("early", False)
    fast = precision == "bf16+cl"
    layout = torch.channels_last if fast else torch.contiguous_format
    torch.manual_seed(0)
    model = create_model("cifar_resnet18", num_classes=10, width=width).to(device, memory_format=layout)
    head = EarlyHead(model, "layer1", 10).to(device) if early else None
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    keep = KeepAugment("cutout", 16, early_head=head, **opts)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device, generator=g).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device, generator=g)
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast)

    def step():
        with cast:
            out = keep(model, x, y, generator=g)
            loss = F.cross_entropy(model(out.x).float(), out.target)
            if head is not None:
                loss = loss + head.loss(out.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    return step


def peak_memory_mb(variant: str, device: torch.device, precision: str = "fp32", **kw) -> float:
    if device.type == "cuda":
        step = make_step(variant, device, precision, **kw)
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    cmd = [sys.executable, __file__, "--peak-rss-of", variant, "--precision", precision,
           "--batch", str(kw.get("batch", 128)), "--width", str(kw.get("width", 64))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def bench_train(device: torch.device, steps: int, precisions=("fp32",), batch: int = 128, width: int = 64,
                variants=tuple(VARIANTS), peak: bool = True) -> list[dict]:
    """Median step time of each (variant, precision), measured alternately; ratios to Cutout in the same
    precision."""
    keys = [(v, p) for p in precisions for v in variants]
    steppers = {(v, p): make_step(v, device, p, batch, width) for v, p in keys}
    for s in steppers.values():  # warm-up
        s()
    times = {k: [] for k in keys}
    for _ in range(steps):
        for k, s in steppers.items():  # alternate variants so drift hits all of them alike
            times[k].append(elapsed(s, device))
    del steppers
    med = {k: sorted(t)[len(t) // 2] for k, t in times.items()}
    paper = {"keep_full": 2.0, "keep_lowres": 1.26, "keep_early": 1.21}
    goal = {"keep_full": 1.5, "keep_lowres": 1.15, "keep_early": 1.15, "keep_lowres_early": 1.04}
    base = lambda v: v.split("+")[0]  # noqa: E731
    return [dict(variant=v, precision=p, step_s=med[(v, p)], img_s=batch / med[(v, p)],
                 ratio_to_cutout=med[(v, p)] / med[("cutout", p)], paper_ratio=paper.get(base(v), "-"),
                 goal=goal.get(base(v), "-"),
                 peak_mem_mib=round(peak_memory_mb(v, device, p, batch=batch, width=width)) if peak else "-")
            for v, p in keys]


def sync_free_check(device: torch.device) -> dict:
    """Run every op once with CUDA sync debug mode set to error: any host sync raises (bf16 saliency too)."""
    model = create_model("cifar_resnet18").to(device)
    head = EarlyHead(model, "layer1", 10).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    keeps = {
        "keep_cutout": KeepAugment("cutout", 16),
        "keep_cutout_lowres_early": KeepAugment("cutout", 16, low_res=True, early_head=head),
        "keep_erasing": KeepAugment("erasing"),
        "keep_cutmix": KeepAugment("cutmix", num_classes=10),
        "keep_paste": KeepAugment("paste", 16),
        "keep_cutout_max_logit": KeepAugment("cutout", 16, target="max_logit"),
        "keep_cutout_p0.5_bf16": KeepAugment("cutout", 16, p=0.5, saliency_dtype=torch.bfloat16),
        "cutout_plain": KeepAugment("cutout", 16, selective=False),
    }
    return {name: sync_status(lambda: keep(model, x, y, x_aug=x.flip(3), generator=g), device)  # noqa: B023
            for name, keep in keeps.items()}


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
    ap.add_argument("--quick", action="store_true", help="small preset: B=8 at 224x224, 5 steps, 3 repeats")
    ap.add_argument("--steps", type=int, help="timed training steps per variant (default 10; quick 5)")
    ap.add_argument("--repeats", type=int, help="timed repeats of the op benchmark (default 5; quick 3)")
    ap.add_argument("--skip-train", action="store_true", help="only the op benchmark (a)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="training-step variants of (b) (default all; cutout is always timed, the ratios need it)")
    ap.add_argument("--out", default="bench_core.json")
    ap.add_argument("--peak-rss-of", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=64, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.peak_rss_of:  # child process of peak_memory_mb: two CPU steps, then the peak RSS in KiB
        step = make_step(args.peak_rss_of, device, args.precision, args.batch, args.width)
        step()
        step()
        print(rss_kib())
        return
    preset = "quick" if args.quick else "full"
    steps, repeats = args.steps or (5 if args.quick else 10), args.repeats or (3 if args.quick else 5)
    variants = ["cutout", *(v for v in args.variants if v != "cutout")]
    run(device, preset, steps, repeats, not args.skip_train, Path(args.out), variants=variants)
    print(f"wrote {args.out}; peak RSS of this process {rss_kib() / 1024:.0f} MiB")


def run(device: torch.device, preset: str, steps: int, repeats: int, train: bool, out: Path | None,
        batch: int = 128, width: int = 64, peak: bool = True, variants=tuple(VARIANTS)) -> dict:
    """All sections; the report is written to ``out`` after each one."""
    report = {"machine": machine(device), "device": device.type, "preset": preset}

    def save():
        if out is not None:
            out.write_text(json.dumps(report, indent=2))

    print(f"# bench_core on {report['machine']} ({preset})\n", flush=True)
    report["ops"] = bench_ops(device, repeats, OP_SHAPES[preset])
    save()
    print(f"## (a) selective ops, saliency given\n{table(report['ops'])}\n", flush=True)
    if train:
        precisions = PRECISIONS if device.type == "cuda" else ("fp32",)
        report["train_step"] = bench_train(device, steps, precisions, batch, width, variants, peak=peak)
        save()
        print(f"## (b) CIFAR ResNet-18 training step, batch {batch}\n{table(report['train_step'])}\n", flush=True)
    if device.type == "cuda":
        report["sync_free"] = sync_free_check(device)
        save()
        print("## (c) sync debug mode 'error'\n" + "\n".join(f"- {k}: {v}" for k, v in report["sync_free"].items()))
    return report


if __name__ == "__main__":
    main()
