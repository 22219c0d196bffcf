"""tools/bench_cifar.py's bookkeeping (not its training): finished runs are reused, the summary pairs seeds."""


from tools import bench_cifar as bench


def test_a_finished_run_is_reused_and_other_settings_rerun(tmp_path, monkeypatch):
    calls = []

    def fake_train(name, seed, settings):
        calls.append((name, seed))
        return {"seed": seed, "top1": 50.0 + len(calls), "img_s": 1.0, "sec_per_epoch": 1.0, "cut_area": 196.0}

    monkeypatch.setattr(bench, "train_arm", fake_train)
    first = bench.run_arm("cutout16", 0, tmp_path / "data", ["train.epochs=4"], tmp_path)
    again = bench.run_arm("cutout16", 0, tmp_path / "data", ["train.epochs=4"], tmp_path)
    assert again == first and calls == [("cutout16", 0)]  # reused, not retrained
    other = bench.run_arm("cutout16", 0, tmp_path / "data", ["train.epochs=5"], tmp_path)
    assert other["top1"] == 52.0 and len(calls) == 2  # other settings: trained again


def test_summary_pairs_each_keep_arm_with_its_baseline_by_seed():
    runs = lambda top1s: [{"seed": s, "top1": t, "img_s": 10.0, "sec_per_epoch": 2.0, "cut_area": a}  # noqa: E731
                          for s, (t, a) in enumerate(top1s)]
    rows = {r["arm"]: r for r in bench.summarise({"cutout16": runs([(47.0, 196.0), (48.0, 196.0)]),
                                                  "keep_cutout16": runs([(48.0, 168.0), (48.5, 166.0)])})}
    assert rows["keep_cutout16"]["paired_diff"] == "+0.75 ± 0.35 (n=2)"
    assert rows["keep_cutout16"]["cut_area"] == "167.0" and rows["cutout16"]["paired_diff"] == "-"
    assert rows["keep_cutout16"]["baseline"] == "cutout16" and rows["keep_cutout16"]["keep_overhead"] == "1.00x"


def test_runs_split_over_processes_merge_into_one_summary(tmp_path, capsys):
    import json

    import pytest

    def part(seed, cut, keep, preset="cpu"):
        results = {"cutout16": [{"seed": seed, "top1": cut, "img_s": 10.0, "sec_per_epoch": 2.0, "cut_area": 196.0}],
                   "keep_cutout16": [{"seed": seed, "top1": keep, "img_s": 10.0, "sec_per_epoch": 3.0,
                                      "cut_area": 168.0}]}
        path = tmp_path / f"s{seed}_{preset}.json"
        path.write_text(json.dumps({"preset": preset, "device": "cpu", "overrides": [], "controls": [],
                                    "results": bench.summarise(results)}))
        return str(path)

    out = tmp_path / "merged.json"
    bench.merge([part(0, 47.0, 48.0), part(1, 48.0, 48.5)], str(out))
    rows = {r["arm"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["keep_cutout16"]["paired_diff"] == "+0.75 ± 0.35 (n=2)"
    assert [r["seed"] for r in rows["cutout16"]["runs"]] == [0, 1]
    assert "| keep_cutout16 | 48.25 ± 0.35 | +0.75 ± 0.35 (n=2)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="differ in 'preset'"):
        bench.merge([part(0, 47.0, 48.0), part(1, 48.0, 48.5, preset="cpu_quick")], str(out))
