"""tools/gpu_check.py --dry-run (CPU, tiny sizes): the prepared GPU script cannot rot between GPU sessions."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu_check"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] and report["cuda_tests"]["status"].startswith("skipped")
    assert {r["op"] for r in report["bench_core"]["ops"]} == {"selective-cut", "selective-paste"}
    assert {r["variant"] for r in report["bench_core"]["train_step"]} >= {"cutout", "keep_lowres_early"}
    assert {(r["arm"], r["path"]) for r in report["step_paths"]} == {("cutout", "eager"),
                                                                     ("keep_cutout_lowres_early", "eager")}
    runs = report["cifar"]["runs"]
    assert [r["arm"] for r in runs[:2]] == ["cutout", "keep_cutout_lowres_early"] and all(r["loader"] for r in runs)
    summary = report["cifar"]["summary"]["keep_cutout_lowres_early"]
    assert len(summary["paired_diff_per_seed"]) == summary["seeds"] >= 1
    assert run.stdout.rstrip().splitlines()[-1].startswith("| wall time |")  # the summary table is printed last
    assert (out / "gpu_check.log").read_text().rstrip().endswith(run.stdout.rstrip().splitlines()[-1])


def test_gpu_check_only_cifar_dry_run(tmp_path):
    from tools import gpu_check

    out = tmp_path / "cifar_only"
    assert gpu_check.main(["--dry-run", "--only-cifar", "--seeds", "1", "--out", str(out)]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert "cuda_tests" not in report and [r["arm"] for r in report["cifar"]["runs"]] == [
        "cutout", "keep_cutout_lowres_early"]
