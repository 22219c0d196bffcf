import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from core.engine.checkpoint import load_checkpoint
from core.engine.config import ConfigError, load_config
from reid.engine import ReidTrainer, warmup_multistep
from reid.model import BoTNet
from reid.schema import ReidConfig

from .test_data import test_mini_subset  # noqa: F401  (extracts the mini archive)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "reid" / "configs" / "bot_r50_keep.yaml"
MINI = Path("/tmp") / "keepaug-market-mini"


@pytest.fixture
def tiny(tmp_path):
    if not (MINI / "Market-1501-v15.09.15").is_dir():
        test_mini_subset()
    return [f"data.root={MINI}", "model.pretrained=", "model.depth=18",
            "data.p=4", "data.k=2", "data.height=64", "data.width=32",
            "data.pad=4", "data.workers=0", "data.test_batch=128", "train.device=cpu", "train.progress=false",
            "train.tensorboard=false", "train.deterministic=true", "optim.warmup_epochs=0", "optim.lr=0.001",
            "train.max_steps_per_epoch=4", f"train.output_dir={tmp_path / 'reid'}"]


def test_lr_schedule_matches_bot():
    from reid.schema import OptimConfig

    f = warmup_multistep(OptimConfig())
    lrs = [3.5e-4 * f(i) for i in range(120)]
    assert lrs[0] == pytest.approx(3.815e-5, rel=1e-3)  # epoch 1
    assert lrs[9] == pytest.approx(3.5e-4) and lrs[38] == pytest.approx(3.5e-4)  # epochs 10-39
    assert lrs[39] == pytest.approx(3.5e-5) and lrs[69] == pytest.approx(3.5e-6)  # epochs 40, 70


def test_bot_head_structure():
    net = BoTNet(10, depth=50, last_stride=1)
    assert net.bottleneck.bias.requires_grad is False and net.classifier.bias is None
    net.train()
    logits, f_t = net(torch.randn(2, 3, 64, 32))
    assert logits.shape == (2, 10) and f_t.shape == (2, 2048)
    net.eval()
    assert net(torch.randn(2, 3, 64, 32)).shape == (2, 2048)
    # last stride 1: layer4 keeps layer3's resolution (64x32 input -> 4x2)
    b = net.base
    x = b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(torch.randn(1, 3, 64, 32))))))))
    assert b.layer4(x).shape[-2:] == x.shape[-2:]


def test_neck_feat_picks_the_test_feature():
    torch.manual_seed(0)
    after = BoTNet(10, depth=18).eval()
    before = BoTNet(10, depth=18, neck_feat="before").eval()
    before.load_state_dict(after.state_dict())
    after.bottleneck.running_mean.uniform_(-1, 1)  # a BNNeck that is not the identity
    before.bottleneck.load_state_dict(after.bottleneck.state_dict())
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        f_t = after.features(x)
        assert torch.equal(before(x), f_t)
        assert torch.allclose(after(x), after.bottleneck(f_t)) and not torch.allclose(after(x), f_t)
    with pytest.raises(ValueError, match="model.neck_feat"):
        BoTNet(10, depth=18, neck_feat="middle")
    with pytest.raises(ConfigError, match="model.neck_feat must be after or before"):
        load_config(ReidConfig, BASE, ["model.neck_feat=middle"])


def test_loads_torchvision_and_exported_backbones(tmp_path):
    tv = torchvision.models.resnet50()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items() if not k.startswith("fc.")}},
               tmp_path / "wrapped.pth")
    for f in ("tv.pth", "wrapped.pth"):
        net = BoTNet(5, 50)
        net.load_backbone(tmp_path / f)
        assert torch.equal(net.base.layer1[0].conv1.weight, tv.layer1[0].conv1.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not match"):
        BoTNet(5, 50).load_backbone(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        BoTNet(5, 50).load_backbone(tmp_path / "missing.pth")


@pytest.mark.slow
def test_short_run_loss_falls_and_eval_writes_json(tiny):
    cfg = load_config(ReidConfig, BASE, [*tiny, "train.epochs=3", "eval.every=3"])
    trainer = ReidTrainer(cfg)
    trainer.fit()
    rows = (trainer.out / "metrics.csv").read_text().splitlines()
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert losses[-1] < losses[0]
    metrics = json.loads((trainer.out / "eval.json").read_text())
    assert metrics["valid_queries"] == 104 and 0 < metrics["mAP"] <= 100 and metrics["rank1"] <= metrics["rank10"]


@pytest.mark.slow
def test_resume_is_exact_and_eval_only_cli(tiny, tmp_path):
    workers = "data.workers=2"  # each image's flip / crop is seeded per (epoch, index): exact with workers too
    full = ReidTrainer(load_config(ReidConfig, BASE, [*tiny, "train.epochs=2", "eval.every=100", workers,
                                                      f"train.output_dir={tmp_path / 'full'}"]))
    full.fit()
    part = [*tiny, "train.epochs=2", "eval.every=100", workers, f"train.output_dir={tmp_path / 'cut'}"]
    ReidTrainer(load_config(ReidConfig, BASE, [*part, "train.stop_after_epoch=1"])).fit()
    resumed = ReidTrainer(load_config(ReidConfig, BASE, part))
    resumed.fit(resume=True)
    for k, v in full.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "train_reid.py"), str(BASE), *part, "--eval-only",
                          "--checkpoint", str(tmp_path / "cut" / "last.pt"), "--out", str(tmp_path / "m.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mAP" in json.loads((tmp_path / "m.json").read_text())
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
