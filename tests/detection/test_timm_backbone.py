"""timm models as Detectron2 backbones: names by stride, checkpoints loaded completely, freezing."""

import pytest
import timm
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from detection.config import load_config
from detection.timm_backbone import TimmBackbone
from detection.weights import WeightsError


def normalised(state):
    return {k.replace("_", ".").removeprefix("model."): v for k, v in state.items()}


@pytest.mark.parametrize("name", ["convnext_atto", "efficientnet_b0", "resnet18"])
def test_checkpoint_of_ours_loads_into_every_backbone_weight(name, tmp_path):
    """ConvNeXt's features wrapper renames modules (stages.0 -> stages_0): loading still fills every
    weight, from a DDP-prefixed checkpoint with a 10-class classifier."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ck.pth")
    backbone = TimmBackbone(name, ("res2", "res3", "res4", "res5"), checkpoint=str(tmp_path / "ck.pth"))
    ours, ref = normalised(backbone.body.state_dict()), normalised(model.state_dict())
    assert ours and all(torch.equal(v, ref[k]) for k, v in ours.items())
    shapes = backbone.output_shape()
    assert [shapes[f].stride for f in ("res2", "res3", "res4", "res5")] == [4, 8, 16, 32]
    out = backbone.eval()(torch.randn(1, 3, 64, 96))
    assert {k: v.shape[-2:] for k, v in out.items()} == {"res2": (16, 24), "res3": (8, 12), "res4": (4, 6),
                                                        "res5": (2, 3)}
    assert all(out[f].shape[1] == shapes[f].channels for f in out)


def test_checkpoint_of_another_model_is_an_error(tmp_path):
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match="lacks .* weights of timm's resnet34"):
        TimmBackbone("resnet34", checkpoint=str(tmp_path / "r18.pth"))
    with pytest.raises(WeightsError, match="MODEL.TIMM.CHECKPOINT: weights file not found"):
        TimmBackbone("resnet18", checkpoint=str(tmp_path / "absent.pth"))


def test_unknown_feature_and_model_names():
    with pytest.raises(ValueError, match=r"OUT_FEATURES: \['res6'\] not produced"):
        TimmBackbone("resnet18", ("res5", "res6"))
    with pytest.raises(ValueError, match="MODEL.TIMM.NAME='no_such_net'"):
        TimmBackbone("no_such_net")


def test_freeze_at_and_frozen_bn_follow_detectron2_for_a_resnet():
    backbone = TimmBackbone("resnet18", freeze_at=2, norm="FrozenBN")
    frozen = {n for n, p in backbone.body.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in backbone.body.named_parameters() if n.startswith(("conv1.", "layer1."))}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())


def test_built_from_config_with_fpn():
    cfg = load_config("timm/faster_rcnn_timm_FPN_3x.yaml", ["MODEL.TIMM.NAME=resnet18", "MODEL.TIMM.CHECKPOINT="])
    fpn = build_backbone(cfg, ShapeSpec(channels=3))
    assert sorted(fpn.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    cfg = load_config("timm/retinanet_timm_FPN_3x.yaml", ["MODEL.TIMM.NAME=resnet18", "MODEL.TIMM.CHECKPOINT="])
    assert sorted(build_backbone(cfg, ShapeSpec(channels=3)).output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
