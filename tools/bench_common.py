"""What the benchmark scripts of ``tools/`` share: the fixed-budget benchmarks' options, data and arm loop
(bench_cifar, bench_uda, bench_reid), the mean ± std format, and the device sync and peak-memory reading of
the timing benchmarks (bench_core, bench_rerank)."""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tarfile
from pathlib import Path

import torch


def folder_or_extracted(data: str, cache: Path) -> Path:
    """``data`` itself if it is a folder, else the archive ``data`` extracted once into ``cache``."""
    path = Path(data)
    if path.is_dir():
        return path
    if not path.is_file():
        raise SystemExit(f"--data {data}: neither a folder nor an archive")
    marker = cache / ".extracted"
    if not marker.exists():
        print(f"extracting {path} into {cache} ...", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as tar:
            tar.extractall(cache, filter="data")
        marker.touch()
    return cache


def cifar_root(data: str, cache: str) -> Path:
    out = folder_or_extracted(data, Path(cache))
    if out == Path(data):
        return out
    roots = [p.parent for p in out.rglob("train") if p.is_dir() and (p.parent / "test").is_dir()]
    if not roots:
        raise SystemExit(f"{data} has no train/ and test/ folders")
    return roots[0]


def mean_std(values: list[float], signed: bool = False, digits: int = 2) -> str:
    sign = "+" if signed else ""
    if len(values) > 1:
        return f"{statistics.mean(values):{sign}.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    return f"{values[0]:{sign}.{digits}f}"


def bench_parser(doc: str, presets: dict, cache: str, out: str, data_required: bool = True) -> argparse.ArgumentParser:
    """The options every fixed-budget benchmark takes (bench_cifar, bench_uda, bench_reid); ``data_required``
    False for a tool that can run without data (bench_cifar's ``--merge``), which then checks it itself."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", required=data_required,
                    help="the data folder or its archive" + ("" if data_required else " (required unless --merge)"))
    ap.add_argument("--cache", default=cache, help="where an archive is extracted")
    ap.add_argument("--preset", choices=sorted(presets), default="cpu")
    ap.add_argument("--seeds", type=int, help="number of seeds (default: the preset's)")
    ap.add_argument("--out", default=out)
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every arm")
    return ap


def compare_arms(name: str, args, seeds: int, arms, train, summary, columns: dict[str, str]) -> None:
    """bench_reid's and bench_uda's loop: ``train(arm, seed)`` -> that run's figures, seed-major; then per arm a row
    ``{"arm", **summary(runs), "runs"}``, printed (``columns``: heading -> row key) and saved as <--out>/<name>.json."""
    results: dict[str, list[dict]] = {}
    for seed in range(seeds):
        for arm in arms:
            print(f"== {arm}, seed {seed}", flush=True)
            results.setdefault(arm, []).append(train(arm, seed))
    device = torch.cuda.get_device_name() if args.preset == "gpu" else f"{platform.machine()} CPU"
    print(f"\n# {name}, preset {args.preset}, {device}\n")
    print(f"| arm | {' | '.join(columns)} |\n|---|" + "---|" * len(columns))
    rows = [{"arm": arm, **summary(runs), "runs": runs} for arm, runs in results.items()]
    for row in rows:
        print(f"| {row['arm']} | " + " | ".join(str(row[key]) for key in columns.values()) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"preset": args.preset, "device": device, "results": rows}, indent=2))
    print(f"\nwrote {out / f'{name}.json'}")


def rss_kib(field: str = "VmHWM") -> int:
    """This process's peak (VmHWM) or current (VmRSS) resident memory in KiB (/proc's VmHWM resets at exec,
    unlike ru_maxrss, which a forked child inherits)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
