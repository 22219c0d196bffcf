"""The run directory as a user meets it: refusing to clobber a run, --overwrite, blind --resume, the files a
run leaves, checkpoints that load with weights_only=True, one-line CLI errors, Ctrl-C, --eval-only from a
checkpoint alone, and the non-finite stop at the train.check_every cadence.

Most checks call ``Trainer`` or ``tools/train_cls.py``'s ``main`` in this process (a tiny run takes a fraction
of a second); a real subprocess is used only where the process itself is the behaviour (exit status, what
reaches stderr, SIGINT)."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from classification.engine import Trainer
from classification.schema import ClsConfig
from core.engine.checkpoint import load_checkpoint
from core.engine.config import load_config, to_dict
from core.engine.hooks import Hook
from core.engine.run_dir import RunDirError
from tools import train_cls  # noqa: E402

from .conftest import BASE, ROOT

TRAIN_CLS = ROOT / "tools" / "train_cls.py"


def rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def epochs_logged(out: Path) -> list[int]:
    return [int(r["epoch"]) for r in rows(out)]


def json_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stdout
    return json.loads(lines[-1])


def spawn(*args, env=None, **kw) -> subprocess.Popen:
    """``tools/train_cls.py`` in a child process with SIGINT at its default (a test runner started in the
    background may have it ignored, and Python would then keep ignoring it)."""
    return subprocess.Popen([sys.executable, str(TRAIN_CLS), *args], cwd=ROOT, text=True,
                            env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- 1. a second run into a folder holding last.pt ---------------------------------------------------------
def test_second_run_is_refused_and_overwrite_replaces_the_run(tiny_cfg, capsys):
    first = Trainer(tiny_cfg("train.epochs=2"))
    first.fit()
    out = first.out
    assert epochs_logged(out) == [1, 2]
    last_bytes = (out / "last.pt").read_bytes()

    again = Trainer(tiny_cfg("train.tensorboard=true"))
    with pytest.raises(RunDirError, match="--resume") as err:
        again.fit()
    assert "--overwrite" in str(err.value) and str(out) in str(err.value)
    assert (out / "last.pt").read_bytes() == last_bytes  # nothing touched
    assert not (out / "tb").exists()  # a refused start leaves no (empty) TensorBoard folder
    assert again.step == 0

    with pytest.raises(RunDirError, match="exclude"):
        Trainer(tiny_cfg()).fit(resume=True, overwrite=True)
    assert (out / "last.pt").read_bytes() == last_bytes

    capsys.readouterr()
    replaced = Trainer(tiny_cfg())  # train.epochs=1
    replaced.fit(overwrite=True)
    assert "--overwrite: removed" in capsys.readouterr().out
    assert epochs_logged(out) == [1]  # the old run's rows are gone: no 1,2,1
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and load_checkpoint(out / "best.pt")["epoch"] == 1
    env = json.loads((out / "env.json").read_text())
    assert len(env) == 1 and env[0]["resumed"] is False  # a fresh history
    log = (out / "train.log").read_text()
    assert log.count("run directory") == 1 and "epoch 2/2" not in log


def test_overwrite_also_removes_kept_epoch_copies(tiny_cfg):
    Trainer(tiny_cfg("train.epochs=2", "train.keep_every=1")).fit()
    out = Trainer(tiny_cfg()).out
    assert (out / "epoch_0002.pt").is_file()
    Trainer(tiny_cfg()).fit(overwrite=True)  # keep_every=0: the new run keeps no copies
    assert not list(out.glob("epoch_*.pt")), sorted(p.name for p in out.iterdir())


def test_main_resume_and_overwrite_together_is_a_one_line_error(tiny_overrides, capsys):
    code = train_cls.main([str(BASE), *tiny_overrides, "--resume", "--overwrite"])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and err.startswith("error:") and "--resume and --overwrite" in err


# -- 2. --resume ------------------------------------------------------------------------------------------
def test_resume_without_checkpoint_starts_a_new_run(tiny_cfg, capsys):
    trainer = Trainer(tiny_cfg())
    trainer.fit(resume=True)
    out = capsys.readouterr().out
    assert "no checkpoint" in out and "new run" in out
    assert trainer.step == 2 and load_checkpoint(trainer.out / "last.pt")["epoch"] == 1
    assert json.loads((trainer.out / "env.json").read_text())[0]["resumed"] is False


@pytest.mark.parametrize("override, key, old, new", [
    ("aug.method=keep_cutout", "aug.method", "cutout", "keep_cutout"),
    ("model.kwargs={width: 8}", "model.kwargs", {"width": 4}, {"width": 8}),
])
def test_resume_refuses_a_changed_key_and_leaves_the_run_alone(override, key, old, new, tiny_cfg):
    first = Trainer(tiny_cfg())
    first.fit()
    out = first.out
    before = {name: (out / name).read_bytes() for name in ("config.yaml", "env.json", "train.log", "last.pt")}
    other = Trainer(tiny_cfg(override))
    with pytest.raises(RunDirError) as err:
        other.fit(resume=True)
    msg = str(err.value)
    assert f"{key}: {old!r} -> {new!r}" in msg, msg  # the key and both values
    assert {name: (out / name).read_bytes() for name in before} == before  # config.yaml etc. untouched
    assert other.step == 0


def test_resume_with_more_epochs_continues_then_reports_a_finished_run(tiny_cfg, tiny_overrides, capsys):
    Trainer(tiny_cfg()).fit()  # 1 epoch, 2 steps
    capsys.readouterr()
    longer = Trainer(tiny_cfg("train.epochs=2"))
    longer.fit(resume=True)
    out = capsys.readouterr().out
    assert "train.epochs: 1 -> 2" in out and "resumed at epoch 1" in out
    assert longer.epoch == 2 and longer.step == 4
    assert epochs_logged(longer.out) == [1, 2]
    ckpt = load_checkpoint(longer.out / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4

    # --resume on the finished run: its final metrics, no training
    code = train_cls.main([str(BASE), *tiny_overrides, "train.epochs=2", "--resume"])
    assert code == 0
    reported = json_line(capsys.readouterr().out)
    assert reported["epoch"] == 2
    assert reported["val_top1"] == float(rows(longer.out)[-1]["val_top1"])
    after = load_checkpoint(longer.out / "last.pt")
    assert after["step"] == 4 and after["epoch"] == 2  # step count unchanged
    assert epochs_logged(longer.out) == [1, 2]
    env = json.loads((longer.out / "env.json").read_text())
    assert [e["resumed"] for e in env] == [False, True, True]


# -- 3./4. the files a run leaves; checkpoints load with weights_only=True ----------------------------------
def test_files_a_run_leaves(tiny_cfg):
    trainer = Trainer(tiny_cfg("train.epochs=2", "train.keep_every=1", "train.tensorboard=true"))
    trainer.fit()
    out = trainer.out
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "last.pt", "best.pt", "metrics.csv", "train.log", "env.json", "epoch_0001.pt",
            "epoch_0002.pt", "tb"} <= names, names
    assert (out / "tb").is_dir() and any((out / "tb").iterdir())  # TensorBoard on: the writer did write

    # config.yaml: the resolved config, loadable again
    assert yaml.safe_load((out / "config.yaml").read_text()) == to_dict(trainer.cfg)
    assert to_dict(load_config(ClsConfig, out / "config.yaml")) == to_dict(trainer.cfg)

    # every checkpoint loads with plain torch.load(weights_only=True)
    ckpts = {n: torch.load(out / n, map_location="cpu", weights_only=True)
             for n in ("last.pt", "best.pt", "epoch_0001.pt", "epoch_0002.pt")}
    assert isinstance(ckpts["last.pt"]["rng"][0]["numpy"][1], torch.Tensor)  # numpy state as a tensor
    assert ckpts["epoch_0001.pt"]["epoch"] == 1 and ckpts["epoch_0002.pt"]["epoch"] == 2
    for k, v in ckpts["last.pt"]["model"].items():
        assert torch.equal(v, ckpts["epoch_0002.pt"]["model"][k]), k

    # best.pt: the best validation epoch, its weights
    table = rows(out)
    assert [int(r["epoch"]) for r in table] == [1, 2]
    vals = [float(r["val_top1"]) for r in table]
    best = ckpts["best.pt"]
    assert best["val_top1"] == max(vals)
    assert best["epoch"] == vals.index(max(vals)) + 1  # the first epoch that reached it
    same_epoch = ckpts[f"epoch_{best['epoch']:04d}.pt"]
    for k, v in best["model"].items():
        assert torch.equal(v, same_epoch["model"][k]), k
    fresh = Trainer(tiny_cfg("train.epochs=2"))
    fresh.load_weights(out / "best.pt")
    for k, v in fresh.backbone.state_dict().items():
        assert torch.equal(v, best["model"][k]), k
    assert fresh.evaluate()["val_top1"] == best["val_top1"]

    # train.log: where, which step path, one line per epoch, the end
    lines = (out / "train.log").read_text().splitlines()
    assert "run directory" in lines[0] and str(out) in lines[0]
    assert lines[1] == "eager step (not a CUDA graph: CUDA only, this run is on cpu)"
    for e in (1, 2):
        ep = [line for line in lines if line.startswith(f"epoch {e}/2")]
        assert len(ep) == 1 and "val_top1" in ep[0], lines
    assert lines[-1].startswith("finished") and len(lines) == 5

    # env.json: a list, one entry per start
    env = json.loads((out / "env.json").read_text())
    assert isinstance(env, list) and len(env) == 1
    assert env[0]["resumed"] is False and env[0]["torch"] == torch.__version__
    assert isinstance(env[0]["command"], list) and env[0]["command"]

    resumed = Trainer(tiny_cfg("train.epochs=2", "train.keep_every=1", "train.tensorboard=true"))
    resumed.fit(resume=True)  # finished: nothing to train, but a start is recorded
    env = json.loads((out / "env.json").read_text())
    assert len(env) == 2 and env[1]["resumed"] is True and env[1]["torch"] == torch.__version__
    assert resumed.step == trainer.step


def test_failed_start_with_tensorboard_leaves_no_tb_folder(tiny_cfg, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(FileNotFoundError, match="/nonexistent"):
        Trainer(tiny_cfg("train.tensorboard=true", "data.dataset=imagefolder", "data.root=/nonexistent",
                         f"train.output_dir={out}")).fit()
    assert not (out / "tb").exists()


# -- 5. CLI errors --------------------------------------------------------------------------------------
def test_config_error_blames_the_override(tiny_overrides, capsys):
    assert train_cls.main([str(BASE), *tiny_overrides, "train.amp=none"]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("config error:") and "train.amp=none" in err and "override" in err
    assert "base.yaml" not in err  # the YAML is fine; the override is at fault

    assert train_cls.main([str(BASE), *tiny_overrides, "aug.method=keep_cutoutt"]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("config error") and "aug.method" in err and "keep_cutoutt" in err


def test_debug_flag_shows_the_traceback(tiny_overrides, monkeypatch, tmp_path, capsys):
    bad = [str(BASE), *tiny_overrides, "data.root=/nonexistent", "data.dataset=imagefolder"]
    monkeypatch.delenv("KEEPAUG_DEBUG", raising=False)
    assert train_cls.main(bad) == 2  # in-process: the same one-line path the subprocess test checks
    err = one_line(capsys.readouterr().err)
    assert err.startswith("error:") and "/nonexistent" in err
    with pytest.raises(FileNotFoundError, match="/nonexistent"):  # --debug: the exception propagates
        train_cls.main([*bad, "--debug"])
    monkeypatch.setenv("KEEPAUG_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="/nonexistent"):  # likewise KEEPAUG_DEBUG=1
        train_cls.main(bad)
    monkeypatch.setenv("KEEPAUG_DEBUG", "0")  # 0 means off
    assert train_cls.main(bad) == 2
    assert one_line(capsys.readouterr().err).startswith("error:")


def test_cli_errors_exit_2_with_one_line(tiny_overrides, tmp_path):
    """Real processes, started together (each pays ~5 s of imports): a refused run directory and a bad data
    root give exit 2 and one line on stderr, with TensorBoard on and no tb/ left (--debug / KEEPAUG_DEBUG=1:
    test_debug_flag_shows_the_traceback)."""
    held = tmp_path / "held"
    held.mkdir()
    torch.save({"epoch": 1}, held / "last.pt")
    held_bytes = (held / "last.pt").read_bytes()
    common = [str(BASE), *tiny_overrides, "train.tensorboard=true"]
    bad_root = [*common, "data.root=/nonexistent", "data.dataset=imagefolder", f"train.output_dir={tmp_path / 'b'}"]
    procs = {
        "refused": spawn(*common, f"train.output_dir={held}", stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        "bad_root": spawn(*bad_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
    }
    done = {}
    try:
        for name, p in procs.items():
            _, err = p.communicate(timeout=180)
            done[name] = (p.returncode, err)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    code, err = done["refused"]
    line = one_line(err)
    assert code == 2 and line.startswith("error:") and "--resume" in line and "--overwrite" in line
    assert (held / "last.pt").read_bytes() == held_bytes and not (held / "tb").exists()

    code, err = done["bad_root"]
    line = one_line(err)
    assert code == 2 and line.startswith("error:") and "/nonexistent" in line
    assert not (tmp_path / "b" / "tb").exists()


# -- 6. Ctrl-C ------------------------------------------------------------------------------------------
def test_ctrl_c_stops_with_one_line_and_resume_continues(tiny_overrides, tmp_path):
    out = tmp_path / "run"
    long = [*tiny_overrides, "train.epochs=500", "train.max_steps_per_epoch=0", "data.limit_train=256",
            "train.device=cpu"]
    with open(tmp_path / "stdout", "w") as so, open(tmp_path / "stderr", "w") as se:
        p = spawn(str(BASE), *long, stdout=so, stderr=se)
        try:
            deadline = time.monotonic() + 180
            while not (out / "last.pt").is_file():
                assert p.poll() is None, f"ended early ({p.returncode}): {(tmp_path / 'stderr').read_text()[-2000:]}"
                assert time.monotonic() < deadline, "no last.pt after 180 s"
                time.sleep(0.2)
            p.send_signal(signal.SIGINT)
            code = p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    err = (tmp_path / "stderr").read_text()
    assert code == 130, err[-2000:]
    assert "interrupted at epoch" in err and "continue with --resume" in err and "Traceback" not in err, err
    saved = load_checkpoint(out / "last.pt")
    assert 1 <= saved["epoch"] < 500 and saved["step"] == 16 * saved["epoch"]
    assert f"(epoch {saved['epoch']})" in err
    assert epochs_logged(out) == list(range(1, saved["epoch"] + 1))

    # --resume continues from there (one more epoch; train.epochs may change)
    done = saved["epoch"] + 1
    trainer = Trainer(load_config(ClsConfig, BASE, [*long, f"train.epochs={done}"]))
    trainer.fit(resume=True)
    assert trainer.epoch == done and trainer.step == 16 * done
    assert epochs_logged(out) == list(range(1, done + 1))
    env = json.loads((out / "env.json").read_text())
    assert [e["resumed"] for e in env] == [False, True]
    assert any("train_cls.py" in part for part in env[0]["command"])  # the command line of the CLI start


# -- 7. --eval-only from a checkpoint alone ----------------------------------------------------------------
def test_eval_only_uses_the_checkpoints_config_and_overrides_win(tiny_cfg, monkeypatch, capsys):
    trainer = Trainer(tiny_cfg())
    trainer.fit()
    last = str(trainer.out / "last.pt")
    capsys.readouterr()

    seen = []

    class Spy(Trainer):
        def __init__(self, cfg, *a, **k):
            seen.append(cfg)
            super().__init__(cfg, *a, **k)

    monkeypatch.setattr(train_cls, "Trainer", Spy)
    assert train_cls.main(["--eval-only", "--checkpoint", last]) == 0
    reported = json_line(capsys.readouterr().out)
    assert reported["val_top1"] == float(rows(trainer.out)[-1]["val_top1"])  # same weights, same val set
    assert seen[-1].data.dataset == "sample" and seen[-1].model.kwargs == {"width": 4}
    assert seen[-1].data.limit_val == 32

    assert train_cls.main(["--eval-only", "--checkpoint", last, "data.limit_val=8"]) == 0
    reported = json_line(capsys.readouterr().out)
    assert seen[-1].data.limit_val == 8 and seen[-1].model.kwargs == {"width": 4}  # the override wins
    assert (reported["val_top1"] * 8 / 100) == pytest.approx(round(reported["val_top1"] * 8 / 100))
    assert load_checkpoint(last)["step"] == 2  # evaluation trains nothing


# -- 9. the non-finite stop at the check cadence ------------------------------------------------------------
@pytest.mark.parametrize("check_every, raised_at", [(1, 5), (1000, 6)])
def test_non_finite_loss_names_the_first_bad_step(check_every, raised_at, tiny_cfg):
    class Poison(Hook):  # after step 4 (the first of epoch 2): step 5's loss is NaN
        def after_step(self, trainer, batch):
            if trainer.step == 4:
                with torch.no_grad():
                    trainer.backbone.fc.weight.fill_(float("nan"))

    trainer = Trainer(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=0", f"train.check_every={check_every}"),
                      hooks=[Poison()])
    assert trainer.steps_per_epoch == 3  # 48 images, batch 16
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 5 \(epoch 2\)"):
        trainer.fit()
    assert trainer.step == raised_at  # every step with check_every=1; at the epoch-end check otherwise
    ckpt = load_checkpoint(trainer.out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert epochs_logged(trainer.out) == [1]
    assert not math.isnan(float(rows(trainer.out)[0]["train_loss"]))


def test_logged_lr_is_the_schedules_float_when_the_optimizer_holds_it_on_the_device(tiny_cfg):
    """A CUDA trainer's fused SGD reads its learning rate from a float32 device tensor; metrics.csv still logs
    the schedule's own value (0.05 half-way down the cosine, not float32's 0.05000000074505806)."""
    from core.engine.graphed import lr_on_device

    trainer = Trainer(tiny_cfg("train.epochs=2", "train.eval_every=2"))
    lr_on_device(trainer.optimizers(), trainer.device)  # what prepare_step does for a fused (CUDA) optimizer
    trainer.fit()
    with open(trainer.out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert isinstance(trainer.optimizer.param_groups[0]["lr"], torch.Tensor)
    assert rows[0]["lr"] == repr(0.1 * 0.5 * (1 + math.cos(math.pi / 2)))  # epoch 1 ends at step 2 of 4
    assert float(rows[1]["lr"]) == 0.0
