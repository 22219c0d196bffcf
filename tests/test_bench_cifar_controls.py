"""tools/bench_cifar.py's controls (issue #22), bookkeeping only: the area-matched and compute-matched Cutout of a
Keep arm are built from that seed's measured Keep and baseline runs, run after them, and the Keep arm's paired
differences against each land in the table's row and the JSON."""

import json
import math

import pytest

from classification.augment import area_matched_lengths
from tools import bench_cifar as bench


def run(seed, top1, sec=2.0, area=196.0, epochs=4):
    return {"seed": seed, "top1": top1, "img_s": 10.0, "sec_per_epoch": sec, "train_seconds": sec * epochs,
            "epochs": epochs, "cut_area": area}


def test_control_overrides_from_the_measured_runs():
    keep, base = run(0, 48.0, sec=3.3, area=167.8), run(0, 47.0, sec=2.0)
    area = bench.control_overrides("area", "keep_cutout16", keep, base)
    assert area == [*bench.ARMS["cutout16"], "aug.cutout_area=167.8"]
    compute = bench.control_overrides("compute", "keep_cutout16", keep, base)
    assert compute == [*bench.ARMS["cutout16"], "train.epochs=7"]  # ceil(4 x 1.65) = 7: at least the Keep wall time
    exact = bench.control_overrides("compute", "keep_cutout16", run(0, 48.0, sec=3.0), run(0, 47.0, sec=2.0))
    assert exact[-1] == "train.epochs=6"  # 4 x 1.5 = 6 exactly: not rounded up to 7
    # a paste alone cuts as much as its baseline: no area control; RandAugment has no cut at all
    assert bench.control_overrides("area", "keep_autoaugment_cutout16", keep, base) is None
    assert bench.control_overrides("area", "keep_randaugment", run(0, 1.0, area=None), base) is None
    assert bench.control_overrides("area", "keep_autoaugment_keep_cutout16", keep, base)[-1] == "aug.cutout_area=167.8"
    assert bench.control_overrides("compute", "keep_randaugment", keep, base)[:-1] == bench.ARMS["randaugment"]
    with pytest.raises(ValueError, match="unknown control"):
        bench.control_overrides("time", "keep_cutout16", keep, base)


def test_the_area_control_config_is_valid_and_cuts_the_measured_area():
    from classification.schema import ClsConfig
    from core.engine.config import load_config

    extra = bench.control_overrides("area", "keep_cutout16", run(0, 48.0, area=167.8), run(0, 47.0))
    cfg = load_config(ClsConfig, bench.BASE, extra)
    assert cfg.aug.cutout_area == 167.8 and cfg.aug.plan.region_op == "cutout" and not cfg.aug.plan.keep_cut
    side, q = area_matched_lengths(167.8, 32, 32)
    assert (side, round(q, 3)) == (14, 0.614)


def test_main_runs_controls_after_each_seed_and_reports_paired_differences(tmp_path, monkeypatch, capsys):
    calls = []
    top1 = {"cutout16": 47.0, "keep_cutout16": 48.5, "keep_cutout16.area_matched": 47.5,
            "keep_cutout16.compute_matched": 49.0}

    def fake_train(name, seed, settings):
        calls.append((name, seed, [s for s in settings if s.startswith(("aug.cutout_area", "train.epochs"))]))
        keep = name == "keep_cutout16"
        epochs = int([s for s in settings if s.startswith("train.epochs=")][-1].split("=")[1])
        return run(seed, top1[name] + seed, sec=3.2 if keep else 2.0, epochs=epochs,
                   area=167.0 + seed if keep else 196.0)

    monkeypatch.setattr(bench, "train_arm", fake_train)
    monkeypatch.setattr(bench, "cifar_root", lambda data, cache: tmp_path / "data")
    monkeypatch.setattr("sys.argv", ["bench_cifar.py", "--data", "x", "--preset", "cpu_quick", "--seeds", "3",
                                     "--out", str(tmp_path / "out"), "--arms", "cutout16", "keep_cutout16"])
    bench.main()
    # seed-major: both arms, then the two controls built from that seed's runs
    first_seed = [(n, s) for n, s, _ in calls[:4]]
    assert first_seed == [("cutout16", 0), ("keep_cutout16", 0), ("keep_cutout16.area_matched", 0),
                          ("keep_cutout16.compute_matched", 0)]
    assert calls[2][2][-1] == "aug.cutout_area=167.0" and calls[6][2][-1] == "aug.cutout_area=168.0"
    assert calls[3][2][-1] == f"train.epochs={math.ceil(2 * 1.6)}"  # cpu_quick: 2 epochs x 1.6 -> 4
    report = json.loads((tmp_path / "out" / "bench_cifar.json").read_text())
    rows = {r["arm"]: r for r in report["results"]}
    keep = rows["keep_cutout16"]
    assert keep["paired_diff"] == "+1.50 ± 0.00 (n=3)"
    assert keep["vs_area_matched"] == "+1.00 ± 0.00 (n=3)" and keep["vs_compute_matched"] == "-0.50 ± 0.00 (n=3)"
    assert keep["paired"]["area_matched"]["per_seed"] == [1.0, 1.0, 1.0]
    assert keep["paired"]["compute_matched"]["t"] is None  # identical differences: no t
    assert rows["keep_cutout16.compute_matched"]["control_of"] == "keep_cutout16"
    assert rows["keep_cutout16.compute_matched"]["epochs"] == "4"
    out = capsys.readouterr().out
    assert "| keep_cutout16 | 49.50 ± 1.00 | +1.50 ± 0.00 (n=3) | +1.00 ± 0.00 (n=3) | -0.50 ± 0.00 (n=3) |" in out
    # a rerun reuses every finished run, controls included (their settings come from the reused measurements)
    calls.clear()
    bench.main()
    assert calls == []


def test_no_controls_and_t_statistic():
    assert bench.t_stat([1.0, 2.0, 3.0]) == round(2.0 / (1.0 / math.sqrt(3)), 2)
    assert bench.t_stat([1.0]) is None
    rows = {r["arm"]: r for r in bench.summarise({"cutout16": [run(0, 47.0)], "keep_cutout16": [run(0, 48.0)]})}
    assert rows["keep_cutout16"]["vs_area_matched"] == "-" and rows["keep_cutout16"]["paired_diff"] == "+1.00 (n=1)"


def test_a_disturbed_timing_builds_no_compute_control_and_a_given_overhead_is_used(capsys):
    # 2026-12-01: the baseline of seed 1 ran beside the test suite, 283 s per epoch against Keep's 135.5
    keep, base = run(1, 48.51, sec=135.5), run(1, 46.45, sec=283.0)
    assert bench.control_overrides("compute", "keep_cutout16", keep, base) is None
    assert "not run: measured overhead 0.48x < 1" in capsys.readouterr().out
    given = bench.control_overrides("compute", "keep_cutout16", keep, base, overhead=1.64)
    assert given[-1] == "train.epochs=7"  # ceil(4 x 1.64)
