"""Conversion of torchvision-layout ResNets into Detectron2's ResNet: exact, strict, reported."""

import pickle

import pytest
import timm
import torch
import torchvision
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone

from classification.engine import Trainer as ClsTrainer
from classification.export import export_backbone
from classification.schema import ClsConfig
from core.engine.config import load_config as load_cls_config
from detection.config import load_config
from detection.convert import ConversionError, convert, read_weights, rename, torchvision_to_detectron2
from detection.weights import WeightsError, load_weights

from .conftest import ROOT, random_resnet


def d2_resnet(depth: int, weights) -> torch.nn.Module:
    """Detectron2's ResNet built from our config (FrozenBN, STRIDE_IN_1X1 False), with ``weights`` loaded."""
    cfg = load_config(f"faster_rcnn_R_{depth}_FPN_3x.yaml", ["MODEL.DEVICE=cpu", f"MODEL.WEIGHTS={weights}"])
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    holder = torch.nn.Module()
    holder.backbone = backbone  # names as in GeneralizedRCNN: backbone.stem..., backbone.res2...
    report = load_weights(holder, cfg)
    assert report["missing"] == [], report["missing"]
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and not cfg.MODEL.RESNETS.STRIDE_IN_1X1
    return backbone.eval()


def torchvision_stages(model, x):
    y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    outs = {}
    for i, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4)):
        y = layer(y)
        outs[f"res{i + 2}"] = y
    return outs


@pytest.mark.parametrize("depth", [50, 101])
def test_conversion_is_exact(depth, tmp_path):
    tv = random_resnet(depth, seed=depth)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    report = convert(str(tmp_path / "tv.pth"), tmp_path / "r.pkl", depth=depth)
    assert report["depth"] == depth and report["unconverted"] == ["fc.weight", "fc.bias"]
    d2 = d2_resnet(depth, tmp_path / "r.pkl")
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ours, ref = d2(x), torchvision_stages(tv, x)
    for name in ("res2", "res3", "res4", "res5"):
        assert ours[name].shape == ref[name].shape
        assert (ours[name] - ref[name]).abs().max().item() < 1e-4, name


def test_pickle_layout_follows_detectron2(tmp_path):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "tv.pth")
    convert(str(tmp_path / "tv.pth"), tmp_path / "r.pkl")
    data = pickle.loads((tmp_path / "r.pkl").read_bytes())
    assert data["__author__"] == "torchvision" and data["matching_heuristics"] is True
    model = data["model"]
    assert {"stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.weight",
            "res2.0.shortcut.norm.bias", "res5.2.conv3.norm.weight"} <= set(model)
    assert not any(k.startswith("stem.fc") or k.endswith("num_batches_tracked") for k in model)
    assert data["keepaugment"]["ignored_num_batches_tracked"] == 53


def test_renaming_rules():
    assert rename("conv1.weight") == "stem.conv1.weight"
    assert rename("bn1.running_mean") == "stem.conv1.norm.running_mean"
    assert rename("layer1.0.bn3.weight") == "res2.0.conv3.norm.weight"
    assert rename("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert rename("layer4.0.downsample.1.bias") == "res5.0.shortcut.norm.bias"


def test_timm_resnet_converts_exactly(tmp_path):
    torch.manual_seed(0)
    tm = timm.create_model("resnet50").eval()
    torch.save({"state_dict": tm.state_dict()}, tmp_path / "timm.pth.tar")  # timm train.py's wrapper
    report = convert(str(tmp_path / "timm.pth.tar"), tmp_path / "r.pkl", depth=50)
    assert report["kind"] == "wrapped state dict ('state_dict')"
    d2 = d2_resnet(50, tmp_path / "r.pkl")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (d2(x)["res5"] - tm.forward_features(x)).abs().max().item() < 1e-4


def test_classification_checkpoint_and_export_convert(tmp_path):
    """A real training checkpoint of ours (with an early head) and its export give the same weights."""
    base = ROOT / "classification" / "configs" / "cifar10" / "base.yaml"
    cfg = load_cls_config(ClsConfig, base, [
        "data.dataset=sample", "data.root=", "data.batch_size=8", "data.workers=0", "data.limit_train=16",
        "data.limit_val=8", "model.name=resnet50", "model.kwargs={}", "train.epochs=1",
        "train.max_steps_per_epoch=1", "train.tensorboard=false", "train.progress=false", "aug.length=8",
        "aug.method=keep_cutmix", "aug.early_head=true", f"train.output_dir={tmp_path / 'run'}"])
    trainer = ClsTrainer(cfg)
    trainer.fit()
    ckpt = trainer.out / "last.pt"
    export_backbone(ckpt, tmp_path / "backbone.pth")
    from_ckpt = convert(str(ckpt), tmp_path / "a.pkl", depth=50)
    from_export = convert(str(tmp_path / "backbone.pth"), tmp_path / "b.pkl", depth=50)
    assert from_ckpt["kind"].startswith("classification training checkpoint (resnet50)")
    assert from_ckpt["unconverted"] == ["fc.weight", "fc.bias"] and from_export["unconverted"] == []
    a, b = (pickle.loads((tmp_path / n).read_bytes())["model"] for n in ("a.pkl", "b.pkl"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_wrapper_prefixes_are_stripped_and_extras_reported(tmp_path):
    state = {f"module.{k}": v for k, v in torchvision.models.resnet50().state_dict().items()}
    state["module.head.fc.weight"] = torch.zeros(3)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "dp.pth.tar")  # CutMix-PyTorch's layout
    report = convert(str(tmp_path / "dp.pth.tar"), tmp_path / "r.pkl")
    assert report["converted"] == 265 and sorted(report["unconverted"]) == ["fc.bias", "fc.weight", "head.fc.weight"]


def test_depth_mismatch_is_an_error(tmp_path):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ConversionError, match=r"depth mismatch: the weights are a ResNet-50 \(depth 50, .*\) but "
                                              "depth 101 was asked for: convert with --depth 50"):
        convert(str(tmp_path / "r50.pth"), tmp_path / "r.pkl", depth=101)
    assert not (tmp_path / "r.pkl").exists()


@pytest.mark.parametrize("make, match", [
    (lambda: timm.create_model("efficientnet_b0").state_dict(), "not a torchvision-layout ResNet"),
    (lambda: __import__("classification.models", fromlist=["x"]).create_model("cifar_resnet18").state_dict(),
     "not Detectron2's 7x7 ResNet stem"),
    (lambda: timm.create_model("resnet50d").state_dict(), "not a torchvision-layout ResNet"),
    (lambda: timm.create_model("seresnet50").state_dict(), r"not a plain ResNet: \['layer1.0.se.fc1.weight'"),
    (lambda: timm.create_model("skresnet18").state_dict(), "not a plain ResNet"),
    (lambda: timm.create_model("resnet50_gn").state_dict(), "without BatchNorm running statistics"),
])
def test_non_resnet_inputs_are_errors(make, match, tmp_path):
    torch.save(make(), tmp_path / "x.pth")
    with pytest.raises(ConversionError, match=match):
        convert(str(tmp_path / "x.pth"), tmp_path / "x.pkl")


def test_unreadable_inputs(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="cannot read"):
        read_weights(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        read_weights(tmp_path / "absent.pth")
    torch.save({"a": 1}, tmp_path / "notensors.pth")
    with pytest.raises(ConversionError, match="not a state dict"):
        read_weights(tmp_path / "notensors.pth")


def test_safetensors_input(tmp_path):
    from safetensors.torch import save_file

    state = {f"_orig_mod.{k}": v.contiguous() for k, v in torchvision.models.resnet50().state_dict().items()}
    save_file(state, tmp_path / "r50.safetensors")  # torch.compile's prefix is stripped here too
    report = convert(str(tmp_path / "r50.safetensors"), tmp_path / "r.pkl", depth=50)
    assert report["kind"] == "safetensors state dict" and report["converted"] == 265


def test_basic_block_depths_are_recognised():
    _, report = torchvision_to_detectron2(torchvision.models.resnet18().state_dict())
    assert report["depth"] == 18 and report["block"] == "basic"


def test_cli_reports_and_fails_clearly(tmp_path, capsys):
    import subprocess
    import sys

    from tools import convert_det

    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    tool = str(ROOT / "tools" / "convert_det.py")
    ok = subprocess.run([sys.executable, tool, str(tmp_path / "r50.pth"), str(tmp_path / "r.pkl"), "--depth", "50"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and '"depth": 50' in ok.stdout and "fc.weight" in ok.stderr
    # the failing path in-process (the script's exit status is the one main returns, checked above)
    assert convert_det.main([str(tmp_path / "r50.pth"), str(tmp_path / "r.pkl"), "--depth", "101"]) == 2
    assert "depth mismatch" in capsys.readouterr().err


def upstream_converter(state: dict) -> dict:
    """The renaming of Detectron2's tools/convert-torchvision-to-d2.py (facebookresearch/detectron2 at
    02b5c4e2), which keeps every key: the classifier becomes stem.fc.*, num_batches_tracked stays."""
    model = {}
    for k, v in state.items():
        if "layer" not in k:
            k = "stem." + k
        for t in (1, 2, 3, 4):
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        model[k] = v.detach().numpy()
    return {"model": model, "__author__": "torchvision", "matching_heuristics": True}


def test_detectron2_converter_output_loads_and_its_extra_keys_are_reported(tmp_path, caplog):
    from detectron2.modeling import build_model

    tv = random_resnet(50, seed=1)
    path = tmp_path / "upstream.pkl"
    path.write_bytes(pickle.dumps(upstream_converter(tv.state_dict())))
    cfg = load_config("faster_rcnn_R_50_C4_3x.yaml", ["MODEL.DEVICE=cpu", f"MODEL.WEIGHTS={path}"])
    model = build_model(cfg)
    with caplog.at_level("INFO", logger="detection.weights"):
        report = load_weights(model, cfg)
    assert report["missing_backbone"] == []
    assert {"stem.fc.weight", "stem.fc.bias", "stem.conv1.norm.num_batches_tracked"} <= set(report["ignored"])
    assert len(report["ignored"]) == 2 + 53  # the classifier and every BatchNorm's step counter
    assert "ignored 55 keys" in caplog.text
    ours = model.backbone.res4[0].conv1.weight.detach()
    assert torch.equal(ours, tv.layer3[0].conv1.weight.detach())  # loaded, not left at random init


@pytest.mark.parametrize("make, name, flags", [
    (torchvision.models.resnext50_32x4d, "ResNeXt-50 32x4d", (32, 4)),
    (torchvision.models.wide_resnet50_2, r"Wide ResNet-50 \(width 128\)", (1, 128)),
])
def test_resnext_and_wide_resnets_need_their_groups_and_width(make, name, flags, tmp_path):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    net = make().eval()
    torch.save(net.state_dict(), tmp_path / "x.pth")
    groups, width = flags
    with pytest.raises(ConversionError, match=f"{name} .*--num-groups {groups} --width-per-group {width}.*"
                                              f"MODEL.RESNETS.NUM_GROUPS={groups} MODEL.RESNETS.WIDTH_PER_GROUP"):
        convert(str(tmp_path / "x.pth"), tmp_path / "x.pkl", depth=50)
    assert not (tmp_path / "x.pkl").exists()
    report = convert(str(tmp_path / "x.pth"), tmp_path / "x.pkl", depth=50, num_groups=groups, width_per_group=width)
    assert (report["num_groups"], report["width_per_group"]) == flags
    plain = load_config("faster_rcnn_R_50_FPN_3x.yaml", ["MODEL.DEVICE=cpu", f"MODEL.WEIGHTS={tmp_path / 'x.pkl'}"])
    with pytest.raises(WeightsError, match=f"NUM_GROUPS {groups}, WIDTH_PER_GROUP {width}, but the config builds "
                                           f"NUM_GROUPS 1, WIDTH_PER_GROUP 64: set MODEL.RESNETS.NUM_GROUPS={groups}"):
        load_weights(build_model(plain), plain)
    fitted = [f"MODEL.RESNETS.NUM_GROUPS={groups}", f"MODEL.RESNETS.WIDTH_PER_GROUP={width}"]
    d2 = build_resnet_backbone(load_config("faster_rcnn_R_50_FPN_3x.yaml", ["MODEL.DEVICE=cpu", *fitted]),
                               ShapeSpec(channels=3))
    holder = torch.nn.Module()
    holder.backbone = d2
    cfg = load_config("faster_rcnn_R_50_FPN_3x.yaml", ["MODEL.DEVICE=cpu", f"MODEL.WEIGHTS={tmp_path / 'x.pkl'}",
                                                       *fitted])
    assert load_weights(holder, cfg)["missing"] == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (d2.eval()(x)["res5"] - torchvision_stages(net, x)["res5"]).abs().max().item() < 1e-4


def test_inputs_that_need_full_pickle_are_refused_unless_trusted(tmp_path):
    import argparse

    state = torchvision.models.resnet18().state_dict()
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, tmp_path / "timm_train.pth.tar")
    torch.save(torchvision.models.resnet18(), tmp_path / "module.pth")  # a whole pickled nn.Module
    for name in ("timm_train.pth.tar", "module.pth"):
        with pytest.raises(ConversionError, match="beyond tensors .* pass --trust-pickle"):
            convert(str(tmp_path / name), tmp_path / "r.pkl")
        assert not (tmp_path / "r.pkl").exists()
        assert convert(str(tmp_path / name), tmp_path / "r.pkl", trust_pickle=True)["depth"] == 18
        (tmp_path / "r.pkl").unlink()
    import subprocess
    import sys

    tool = [sys.executable, str(ROOT / "tools" / "convert_det.py"), str(tmp_path / "module.pth"),
            str(tmp_path / "r.pkl")]
    refused = subprocess.run(tool, capture_output=True, text=True)
    assert refused.returncode == 2 and "--trust-pickle" in refused.stderr
    trusted = subprocess.run([*tool, "--trust-pickle"], capture_output=True, text=True)
    assert trusted.returncode == 0 and '"depth": 18' in trusted.stdout
